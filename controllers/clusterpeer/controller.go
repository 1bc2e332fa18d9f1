package clusterpeer

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/conditions"
	"github.com/weft-net/weft/internal/patch"
	"github.com/weft-net/weft/internal/phases"
)

// SyncRefresh is how old a connected peer's lastSyncTime may grow while nothing read from
// the peer changes.
const SyncRefresh = 10 * time.Minute

// indexSecret indexes ClusterPeers by "namespace/name" of their kubeconfig Secret.
const indexSecret = "spec.kubeconfigSecretRef"

// Options configures the ClusterPeer controller.
type Options struct {
	// Resync is how often a connected peer is read again.
	Resync time.Duration
	// Namespace is the operator's, whose Secrets the manager's cache holds.
	Namespace string
	// RetryBase and RetryMax bound the exponential backoff after a failure.
	RetryBase, RetryMax time.Duration
	// Prober reads peers; nil means the real API prober.
	Prober Prober
}

func (o *Options) defaults() {
	if o.Resync == 0 {
		o.Resync = 30 * time.Second
	}
	if o.RetryBase == 0 {
		o.RetryBase = time.Second
	}
	if o.RetryMax == 0 {
		o.RetryMax = 2 * time.Minute
	}
}

// Reconciler connects to peers and reports their state.
type Reconciler struct {
	client.Client
	Options

	backoff *backoff
	mu      sync.Mutex
	configs map[string]*peerConfig // by ClusterPeer name
	// lastRead is when each peer was last read successfully (lastSyncTime is refreshed
	// only every SyncRefresh; after a restart it is all there is).
	lastRead map[string]time.Time
	// lastInfo is each peer's last successful read (see probe).
	lastInfo map[string]readInfo
	// aliasMu makes alias allocations one at a time; aliasHeld are the aliases each peer
	// (by name) was given, until its status says so.
	aliasMu   sync.Mutex
	aliasHeld map[string][]netip.Prefix
}

// peerConfig is a peer's client configuration, made from its Secret's version.
type peerConfig struct {
	secretVersion, key string
	cfg                *rest.Config
}

// forget tells the prober a configuration is no longer used.
func (r *Reconciler) forget(cfg *rest.Config) {
	if f, ok := r.Prober.(interface{ Forget(*rest.Config) }); ok {
		f.Forget(cfg)
	}
}

// +kubebuilder:rbac:groups=fabric.weft.dev,resources=clusterpeers,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch
// +kubebuilder:rbac:groups=fabric.weft.dev,resources=clusterpeers/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",namespace=weft-system,resources=secrets,verbs=get;list;watch

// peerState carries what one reconcile learned from phase to phase.
type peerState struct {
	peer *fabricv1.ClusterPeer
	// own is this cluster's ClusterNetwork, read once from the cache (empty when there is
	// none); ownErr a failure to read it other than NotFound.
	own    *fabricv1.ClusterNetwork
	ownErr error
	cfg    *rest.Config
	info   peerInfo
	// refused are the peer's ranges checkRanges left out, each with why.
	refused []string
	// aliases are how this cluster sees the peer's overlapping ranges; seenAs how the peer
	// sees this cluster's (checkRanges).
	aliases, seenAs []fabricv1.CIDRAlias
}

// Reconcile reads the peer's credential, probes its API server and reports the result.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, retErr error) {
	peer := &fabricv1.ClusterPeer{}
	if err := r.Get(ctx, req.NamespacedName, peer); err != nil {
		if apierrors.IsNotFound(err) {
			r.backoff.reset(req.Name)
			r.mu.Lock()
			if c := r.configs[req.Name]; c != nil {
				r.forget(c.cfg)
				delete(r.configs, req.Name)
				delete(r.lastInfo, req.Name)
			}
			r.mu.Unlock()
			r.aliasMu.Lock()
			delete(r.aliasHeld, req.Name)
			r.aliasMu.Unlock()
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if peer.DeletionTimestamp != nil {
		return ctrl.Result{}, nil
	}
	before := peer.DeepCopy()
	defer func() {
		peer.Status.ObservedGeneration = peer.Generation
		if err := patch.Status(ctx, r.Client, before, peer, statusOf); err != nil {
			retErr = errors.Join(retErr, fmt.Errorf("patching status: %w", err))
		}
	}()
	s := &peerState{peer: peer, own: &fabricv1.ClusterNetwork{}}
	if err := r.Get(ctx, types.NamespacedName{Name: fabricv1.ClusterNetworkName}, s.own); err != nil {
		s.own = &fabricv1.ClusterNetwork{}
		if !apierrors.IsNotFound(err) {
			s.ownErr = err
		}
	}
	return phases.Run(ctx, s,
		r.loadCredentials,
		r.probe,
		r.checkIdentity,
		r.checkAdvertisement,
		r.checkRanges,
		r.markReady,
	)
}

func statusOf(p *fabricv1.ClusterPeer) any { return p.Status }

func (r *Reconciler) loadCredentials(ctx context.Context, s *peerState) (ctrl.Result, error) {
	ref := s.peer.Spec.KubeconfigSecretRef
	key := ref.Key
	if key == "" {
		key = "kubeconfig"
	}
	if ref.Namespace != r.Namespace {
		return r.fail(s, stalled(fabricv1.ReasonSecretNamespaceRefused,
			"the kubeconfig Secret must be in the operator's namespace %s, the only one where it reads Secrets: move Secret %s/%s there",
			r.Namespace, ref.Namespace, ref.Name))
	}
	secret := &corev1.Secret{}
	// The manager watches Secrets in the operator's namespace.
	if err := r.Client.Get(ctx, types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name}, secret); err != nil {
		if apierrors.IsNotFound(err) {
			return r.fail(s, stalled(fabricv1.ReasonSecretNotFound, "Secret %s/%s not found", ref.Namespace, ref.Name))
		}
		return ctrl.Result{}, fmt.Errorf("reading Secret %s/%s: %w", ref.Namespace, ref.Name, err)
	}
	data, ok := secret.Data[key]
	if !ok {
		return r.fail(s, stalled(fabricv1.ReasonSecretKeyNotFound, "Secret %s/%s has no key %q", ref.Namespace, ref.Name, key))
	}
	// The configuration (and so the prober's clients) lives as long as the Secret's version.
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.configs[s.peer.Name]; c != nil && c.secretVersion == secret.ResourceVersion && c.key == key {
		s.cfg = c.cfg
		return ctrl.Result{}, nil
	}
	cfg, err := restConfigFromKubeconfig(data)
	if err != nil {
		return r.fail(s, stalled(fabricv1.ReasonInvalidKubeconfig, "Secret %s/%s key %q: %v", ref.Namespace, ref.Name, key, err))
	}
	if old := r.configs[s.peer.Name]; old != nil {
		r.forget(old.cfg)
	}
	r.configs[s.peer.Name] = &peerConfig{secretVersion: secret.ResourceVersion, key: key, cfg: cfg}
	s.cfg = cfg
	return ctrl.Result{}, nil
}

func (r *Reconciler) probe(ctx context.Context, s *peerState) (ctrl.Result, error) {
	// A reconcile soon after a read (this cluster's tunnels changed, another peer's ranges
	// did) judges what was just read again instead of asking the peer: its state is learnt
	// every Resync anyway.
	r.mu.Lock()
	last, ok := r.lastInfo[s.peer.Name]
	r.mu.Unlock()
	if ok && last.cfg == s.cfg && time.Since(last.at) < r.Resync/2 {
		s.info = last.info
		return ctrl.Result{}, nil
	}
	info, err := r.Prober.Probe(ctx, s.cfg)
	s.info = info
	r.mu.Lock()
	if r.lastInfo == nil {
		r.lastInfo = map[string]readInfo{}
	}
	if err == nil {
		r.lastInfo[s.peer.Name] = readInfo{info: info, cfg: s.cfg, at: time.Now()}
	} else {
		delete(r.lastInfo, s.peer.Name)
	}
	r.mu.Unlock()
	if err != nil {
		return r.fail(s, classify("probing "+s.cfg.Host, err))
	}
	return ctrl.Result{}, nil
}

// readInfo is a successful read of a peer, and when and with which configuration it was made.
type readInfo struct {
	info peerInfo
	cfg  *rest.Config
	at   time.Time
}

// checkIdentity makes sure the API server reached is the cluster the spec names, and not
// this cluster itself.
func (r *Reconciler) checkIdentity(_ context.Context, s *peerState) (ctrl.Result, error) {
	if s.info.ClusterID != s.peer.Spec.ClusterID {
		return r.fail(s, stalled(fabricv1.ReasonClusterIDMismatch,
			"the API server at %s belongs to cluster %q, not %q", s.cfg.Host, s.info.ClusterID, s.peer.Spec.ClusterID))
	}
	if s.ownErr == nil && s.own.Spec.ClusterID == s.peer.Spec.ClusterID {
		return r.fail(s, stalled(fabricv1.ReasonPeerIsThisCluster,
			"cluster %q is this cluster; a cluster does not peer with itself", s.peer.Spec.ClusterID))
	}
	return ctrl.Result{}, nil
}

// checkAdvertisement holds back a peer whose advertisement is malformed or beyond the
// per-peer limits (advertisement.go): what it says would become tunnels, routes and probes
// on every node.
func (r *Reconciler) checkAdvertisement(_ context.Context, s *peerState) (ctrl.Result, error) {
	if s.ownErr != nil {
		return ctrl.Result{}, s.ownErr
	}
	if why := checkAdvertisement(s.info, ownPrefixes(s.own)); why != "" {
		return r.fail(s, stalled(fabricv1.ReasonInvalidAdvertisement, "peer %s is held back: %s", s.peer.Spec.ClusterID, why))
	}
	return ctrl.Result{}, nil
}

// checkRanges gives aliases to the peer's pod and service ranges that overlap this
// cluster's, the alias pool or those of a peer that was there first (or, with
// spec.overlap.policy Refuse, holds the peer back): traffic to such addresses would be
// ambiguous. It also takes in how the peer sees this cluster. Only this peer is held back
// when something is wrong; the others keep working.
func (r *Reconciler) checkRanges(ctx context.Context, s *peerState) (ctrl.Result, error) {
	p := s.peer
	who := "peer " + p.Spec.ClusterID
	if s.ownErr != nil {
		return ctrl.Result{}, s.ownErr
	}
	// Ranges the peer may not claim are left out (never routed); the rest stay in force.
	local, err := r.localAddrs(ctx)
	if err != nil {
		return ctrl.Result{}, err
	}
	var refusedServices []string
	s.info.PodCIDRs, s.refused = boundRanges("pod", s.info.PodCIDRs, local, p.Spec.AllowedCIDRs)
	s.info.ServiceCIDRs, refusedServices = boundRanges("service", s.info.ServiceCIDRs, local, p.Spec.AllowedCIDRs)
	s.refused = append(s.refused, refusedServices...)
	theirs := append(ranges(who, "pod", s.info.PodCIDRs), ranges(who, "service", s.info.ServiceCIDRs)...)
	ownRanges := ownPrefixes(s.own)
	taken := append(ranges("this cluster", "pod", cidrStrings(s.own.Spec.PodCIDRs)),
		ranges("this cluster", "service", cidrStrings(s.own.Spec.ServiceCIDRs))...)
	peers := &fabricv1.ClusterPeerList{}
	if err := r.List(ctx, peers); err != nil {
		return ctrl.Result{}, err
	}
	var othersAliases []netip.Prefix
	for i := range peers.Items {
		q := &peers.Items[i]
		if q.Name == p.Name || q.Spec.ClusterID == p.Spec.ClusterID {
			continue
		}
		// Every block it holds, one it was given with its own addresses too (a range of
		// its inside the pool).
		for _, a := range q.Status.Aliases {
			if _, to, ok := a.Prefixes(); ok {
				othersAliases = append(othersAliases, to)
			}
		}
		if !precedes(q, p) {
			continue
		}
		for _, m := range q.Status.PodRanges() {
			taken = append(taken, namedRange{owner: "peer " + q.Spec.ClusterID, kind: "pod", prefix: m.Local})
		}
		for _, m := range q.Status.ServiceRanges() {
			taken = append(taken, namedRange{owner: "peer " + q.Spec.ClusterID, kind: "service", prefix: m.Local})
		}
	}
	var why []string
	s.seenAs, why = seenAs(s.info.PeerAliases, s.own.Spec.ClusterID, ownRanges)
	if len(why) > 0 {
		return r.fail(s, stalled(fabricv1.ReasonInvalidAdvertisement, "peer %s is held back: how it says it sees this cluster: %s",
			p.Spec.ClusterID, strings.Join(why, "; ")))
	}
	if s.own.Spec.Overlap.Policy == fabricv1.OverlapRefuse {
		if mine, other, ok := firstOverlap(theirs, taken); ok {
			return r.fail(s, stalled(fabricv1.ReasonOverlappingCIDR,
				"%s overlaps %s; with spec.overlap.policy Refuse, peers' pod and service ranges must be disjoint from this cluster's and from each other's", mine, other))
		}
		return ctrl.Result{}, nil
	}
	pool := s.own.Spec.Overlap.Pool()
	takenPrefixes := slices.Clone(pool)
	for _, t := range taken {
		takenPrefixes = append(takenPrefixes, t.prefix)
	}
	// One allocation at a time: two peers reconciled at once must not take one block.
	r.aliasMu.Lock()
	defer r.aliasMu.Unlock()
	for name, held := range r.aliasHeld {
		if name != p.Name {
			othersAliases = append(othersAliases, held...)
		}
	}
	s.aliases, err = assignAliases(theirs, takenPrefixes, pool, p.Status.Aliases, othersAliases)
	if err != nil {
		return r.fail(s, stalled(fabricv1.ReasonAliasPoolExhausted, "%v: widen spec.overlap.aliasPool", err))
	}
	if r.aliasHeld == nil {
		r.aliasHeld = map[string][]netip.Prefix{}
	}
	r.aliasHeld[p.Name] = nil
	for _, a := range s.aliases {
		if _, to, ok := a.Prefixes(); ok {
			r.aliasHeld[p.Name] = append(r.aliasHeld[p.Name], to)
		}
	}
	return ctrl.Result{}, nil
}

func (r *Reconciler) markReady(_ context.Context, s *peerState) (ctrl.Result, error) {
	p := s.peer
	r.backoff.reset(p.Name)
	r.mu.Lock()
	if r.lastRead == nil {
		r.lastRead = map[string]time.Time{}
	}
	r.lastRead[p.Name] = time.Now()
	r.mu.Unlock()
	before := p.Status.DeepCopy()
	p.Status.StaleSince = nil
	meta.RemoveStatusCondition(&p.Status.Conditions, fabricv1.ConditionDegraded)
	p.Status.KubernetesVersion = s.info.KubernetesVersion
	p.Status.WeftVersion = s.info.WeftVersion
	p.Status.PodCIDRs = s.info.PodCIDRs
	p.Status.ServiceCIDRs = s.info.ServiceCIDRs
	p.Status.Gateways = s.info.Gateways
	p.Status.Aliases, p.Status.SeenAs = s.aliases, s.seenAs
	p.Status.MaxActive = s.info.MaxActive
	msg := fmt.Sprintf("read cluster %s at %s (Kubernetes %s)", s.info.ClusterID, s.cfg.Host, s.info.KubernetesVersion)
	setCondition(p, fabricv1.ConditionConnected, metav1.ConditionTrue, fabricv1.ReasonConnected, msg)
	setCondition(p, fabricv1.ConditionAccepted, metav1.ConditionTrue, fabricv1.ReasonConnected, msg)
	if err := markDataPlane(s, ""); err != nil {
		return ctrl.Result{}, err
	}
	retry := r.Resync
	if c := meta.FindStatusCondition(p.Status.Conditions, fabricv1.ConditionReady); c != nil && c.Reason == ReasonAwaitingPeerView {
		// The peer publishes its view soon after it reads this cluster: read it again soon,
		// not from the last read.
		retry = peerViewRetry
		r.mu.Lock()
		delete(r.lastInfo, p.Name)
		r.mu.Unlock()
	}
	if len(s.refused) > 0 {
		// Someone must look: the peer claims what it may not. What it may claim is in force.
		conditions.MarkStalled(&p.Status.Conditions, p.Generation, fabricv1.ReasonRefusedRange,
			fmt.Sprintf("refused, not routed: %s; the peer's other ranges are in force", strings.Join(s.refused, "; ")))
	}
	// The peer is read every Resync; its status is written when what was read changed, and
	// lastSyncTime is otherwise refreshed only every SyncRefresh, so that a clusterset at
	// rest writes (almost) nothing.
	if now := metav1.Now(); p.Status.LastSyncTime == nil || !equality.Semantic.DeepEqual(before, &p.Status) ||
		now.Sub(p.Status.LastSyncTime.Time) >= SyncRefresh {
		p.Status.LastSyncTime = &now
	}
	return ctrl.Result{RequeueAfter: retry}, nil
}

// peerViewRetry is how often a peer whose view of this cluster's overlapping ranges is
// awaited (ReasonAwaitingPeerView) is read again.
const peerViewRetry = 2 * time.Second

// DefaultServeStaleFor is how long a peer's last state is served while its API server
// cannot be read, when its spec does not say: a day covers a managed control plane's
// upgrade, a long API-server restart or a credential left to expire over a weekend night,
// while a peer gone for good is dropped by the next day.
const DefaultServeStaleFor = 24 * time.Hour

// staleRetry is how often an unreadable peer served from its last state is tried again:
// once its API server is back, the peer is current again within this.
const staleRetry = time.Second

// servedStale says whether a failure leaves the peer's last state served: a failure to
// reach its API server or to be let in (not what it answered), after a successful read,
// for at most spec.serveStaleFor since that read.
func (r *Reconciler) servedStale(p *fabricv1.ClusterPeer, pe *peerError) (last time.Time, limit time.Duration, ok bool) {
	if !readFailure(pe.Reason) || !meta.IsStatusConditionTrue(p.Status.Conditions, fabricv1.ConditionAccepted) || p.Status.LastSyncTime == nil {
		return time.Time{}, 0, false
	}
	r.mu.Lock()
	last = r.lastRead[p.Name]
	r.mu.Unlock()
	if last.IsZero() {
		last = p.Status.LastSyncTime.Time
	}
	limit = DefaultServeStaleFor
	if d := p.Spec.ServeStaleFor; d != nil {
		limit = d.Duration
	}
	return last, limit, time.Since(last) < limit
}

// readFailure says whether a failure reason is about reaching the peer's API server or being
// let in, not about what it answered.
func readFailure(reason string) bool {
	switch reason {
	case fabricv1.ReasonUnreachable, fabricv1.ReasonUnauthorized, fabricv1.ReasonForbidden, fabricv1.ReasonUnexpectedResponse:
		return true
	}
	return false
}

// fail records a classified failure and halts the run; it retries after a backoff. A peer
// that cannot be read but was (servedStale) keeps its last state: Ready with reason
// ServingLastKnownState, Degraded, Connected=False with the failure.
func (r *Reconciler) fail(s *peerState, pe *peerError) (ctrl.Result, error) {
	p := s.peer
	if last, limit, ok := r.servedStale(p, pe); ok {
		if p.Status.StaleSince == nil {
			now := metav1.Now()
			p.Status.StaleSince = &now
		}
		setCondition(p, fabricv1.ConditionConnected, metav1.ConditionFalse, pe.Reason, pe.Message)
		msg := fmt.Sprintf("the peer's API server cannot be read since %s (%s); serving the state read at %s until %s (spec.serveStaleFor %s); its gateways' health probes decide the paths",
			p.Status.StaleSince.UTC().Format(time.RFC3339), pe.Reason, last.UTC().Format(time.RFC3339),
			last.Add(limit).UTC().Format(time.RFC3339), limit)
		setCondition(p, fabricv1.ConditionAccepted, metav1.ConditionTrue, fabricv1.ReasonServingLastKnownState, msg)
		if err := markDataPlane(s, msg); err != nil {
			return ctrl.Result{}, err
		}
		setCondition(p, fabricv1.ConditionDegraded, metav1.ConditionTrue, pe.Reason, pe.Message)
		wait := min(r.backoff.next(p.Name), staleRetry, time.Until(last.Add(limit))+time.Second)
		return ctrl.Result{RequeueAfter: wait}, phases.ErrHalt
	}
	if p.Status.StaleSince != nil && readFailure(pe.Reason) && meta.IsStatusConditionTrue(p.Status.Conditions, fabricv1.ConditionAccepted) {
		pe = &peerError{Reason: fabricv1.ReasonStaleTooLong, Stalled: pe.Stalled,
			Message: fmt.Sprintf("its last state was served since %s, for as long as spec.serveStaleFor allows: %s",
				p.Status.StaleSince.UTC().Format(time.RFC3339), pe.Message)}
	}
	p.Status.StaleSince = nil
	meta.RemoveStatusCondition(&p.Status.Conditions, fabricv1.ConditionDegraded)
	connected := metav1.ConditionFalse
	switch pe.Reason {
	case fabricv1.ReasonPeerNotConfigured, fabricv1.ReasonClusterIDMismatch, fabricv1.ReasonPeerIsThisCluster,
		fabricv1.ReasonOverlappingCIDR, fabricv1.ReasonInvalidAdvertisement:
		connected = metav1.ConditionTrue // the API server answered; what it said is the problem
		p.Status.KubernetesVersion = s.info.KubernetesVersion
		p.Status.WeftVersion = s.info.WeftVersion
		if pe.Reason == fabricv1.ReasonOverlappingCIDR {
			p.Status.PodCIDRs, p.Status.ServiceCIDRs = s.info.PodCIDRs, s.info.ServiceCIDRs
		}
	}
	setCondition(p, fabricv1.ConditionConnected, connected, pe.Reason, pe.Message)
	setCondition(p, fabricv1.ConditionAccepted, metav1.ConditionFalse, pe.Reason, pe.Message)
	if pe.Stalled {
		conditions.MarkStalled(&p.Status.Conditions, p.Generation, pe.Reason, pe.Message)
	} else {
		conditions.MarkReconciling(&p.Status.Conditions, p.Generation, pe.Reason, pe.Message)
	}
	return ctrl.Result{RequeueAfter: r.backoff.next(p.Name)}, phases.ErrHalt
}

// setCondition sets one of the ClusterPeer's own conditions (Connected, Accepted, Degraded);
// Ready, Reconciling and Stalled go through internal/conditions.
func setCondition(p *fabricv1.ClusterPeer, typ string, status metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(&p.Status.Conditions, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: p.Generation,
	})
}

// markDataPlane sets Ready from the data plane (dataPlane): True only while a tunnel to the
// peer carries traffic; Reconciling with what is awaited, or Stalled where a user must act.
// stale, when the peer is served from its last state, is Ready's message and its reason
// ServingLastKnownState (the paths are up, what the peer says now is not known).
func markDataPlane(s *peerState, stale string) error {
	if s.ownErr != nil {
		return s.ownErr
	}
	p := s.peer
	d := dataPlane(s.own, p)
	if missing := unseen(s.own, p); d.up && len(missing) > 0 {
		d = dataPlaneState{reason: ReasonAwaitingPeerView, tunnelsUp: d.tunnelsUp, tunnels: d.tunnels,
			message: fmt.Sprintf("the tunnels are up, but peer %s has not published how it sees this cluster's %s, which overlap its ranges: until it does, traffic between them cannot be translated",
				p.Spec.ClusterID, strings.Join(missing, ", "))}
	}
	switch {
	case d.up && stale != "":
		conditions.MarkReady(&p.Status.Conditions, p.Generation, fabricv1.ReasonServingLastKnownState, stale+"; "+d.message)
	case d.up:
		conditions.MarkReady(&p.Status.Conditions, p.Generation, d.reason, d.message)
	case d.stalled:
		conditions.MarkStalled(&p.Status.Conditions, p.Generation, d.reason, d.message)
	default:
		conditions.MarkReconciling(&p.Status.Conditions, p.Generation, d.reason, d.message)
	}
	return nil
}

// SetupWithManager registers the controller. Changes to a peer's Secret (in the operator's
// namespace, which the cache watches) reconcile that peer at once.
func (r *Reconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	if r.Namespace == "" {
		return errors.New("clusterpeer: Options.Namespace (the operator's, where peers' Secrets are) is required")
	}
	r.defaults()
	r.backoff = newBackoff(r.RetryBase, r.RetryMax)
	if r.Prober == nil {
		r.Prober = &apiProber{scheme: mgr.GetScheme()}
	}
	r.configs = map[string]*peerConfig{}
	if err := mgr.GetFieldIndexer().IndexField(ctx, &fabricv1.ClusterPeer{}, indexSecret, func(o client.Object) []string {
		ref := o.(*fabricv1.ClusterPeer).Spec.KubeconfigSecretRef
		return []string{ref.Namespace + "/" + ref.Name}
	}); err != nil {
		return fmt.Errorf("indexing cluster peers by secret: %w", err)
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("clusterpeer").
		For(&fabricv1.ClusterPeer{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.peersUsingSecret)).
		// This cluster's ID and ranges (its spec), and what its gateways report of their
		// tunnels (Ready follows the data plane).
		Watches(&fabricv1.ClusterNetwork{}, handler.EnqueueRequestsFromMapFunc(r.allPeers),
			builder.WithPredicates(predicate.Or[client.Object](predicate.GenerationChangedPredicate{}, predicate.Funcs{
				CreateFunc:  func(event.CreateEvent) bool { return false },
				DeleteFunc:  func(event.DeleteEvent) bool { return false },
				GenericFunc: func(event.GenericEvent) bool { return false },
				UpdateFunc: func(e event.UpdateEvent) bool {
					return dataPlaneDigest(e.ObjectOld.(*fabricv1.ClusterNetwork)) != dataPlaneDigest(e.ObjectNew.(*fabricv1.ClusterNetwork))
				},
			}))).
		// A peer that goes away, or whose advertised ranges or aliases change, may free
		// ranges or aliases another peer was refused, or needs.
		Watches(&fabricv1.ClusterPeer{}, handler.EnqueueRequestsFromMapFunc(r.allPeers),
			builder.WithPredicates(predicate.Funcs{
				CreateFunc:  func(event.CreateEvent) bool { return false },
				DeleteFunc:  func(event.DeleteEvent) bool { return true },
				GenericFunc: func(event.GenericEvent) bool { return false },
				UpdateFunc: func(e event.UpdateEvent) bool {
					o, n := e.ObjectOld.(*fabricv1.ClusterPeer), e.ObjectNew.(*fabricv1.ClusterPeer)
					return !slices.Equal(o.Status.PodCIDRs, n.Status.PodCIDRs) || !slices.Equal(o.Status.ServiceCIDRs, n.Status.ServiceCIDRs) ||
						!slices.Equal(o.Status.Aliases, n.Status.Aliases)
				},
			})).
		WithOptions(controller.Options{MaxConcurrentReconciles: 4}).
		Complete(phases.QuietConflicts(r))
}

func (r *Reconciler) peersUsingSecret(ctx context.Context, o client.Object) []reconcile.Request {
	peers := &fabricv1.ClusterPeerList{}
	if err := r.List(ctx, peers, client.MatchingFields{indexSecret: o.GetNamespace() + "/" + o.GetName()}); err != nil {
		return nil
	}
	return requests(peers)
}

func (r *Reconciler) allPeers(ctx context.Context, _ client.Object) []reconcile.Request {
	peers := &fabricv1.ClusterPeerList{}
	if err := r.List(ctx, peers); err != nil {
		return nil
	}
	return requests(peers)
}

func requests(peers *fabricv1.ClusterPeerList) []reconcile.Request {
	reqs := make([]reconcile.Request, len(peers.Items))
	for i, p := range peers.Items {
		reqs[i] = reconcile.Request{NamespacedName: types.NamespacedName{Name: p.Name}}
	}
	return reqs
}
