package policysync

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weft-net/weft/agent/datapath"
	"github.com/weft-net/weft/agent/policy"
	"github.com/weft-net/weft/agent/policy/oracle"
	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// Syncer compiles and applies the node's policy whenever an input changes, and when asked
// (Sync: a pod was just wired).
type Syncer struct {
	Node     string
	Datapath datapath.Datapath
	// Reader reads the inputs (an informer cache holding Objects; its handlers call Changed).
	Reader client.Reader
	// Report tells the operator which policy generations the node enforces (the agent writes
	// them in its FabricNode's status); nil: nobody is told.
	Report func(context.Context, []fabricv1.RealizedPolicy) error
	Log    klog.Logger

	mu          sync.Mutex
	last        *datapath.Policy
	policies    []fabricv1.FabricPolicy // of the last successful sync
	published   []fabricv1.RealizedPolicy
	reported    bool          // published holds a report
	changed     chan struct{} // see changes
	changedOnce sync.Once

	fqdnMu       sync.Mutex
	fqdn         fqdnCache
	fqdnPatterns map[netip.Addr][]string // the node's pods' FQDN rules' patterns, of the last sync
	nextExpiry   time.Time               // of the learnt addresses in the last sync
	learnWaiters []chan struct{}         // answers held until a sync applies what they taught
	learnt       chan struct{}           // an answer taught something (LearnDNS)
}

// Objects are the kinds the syncer reads; the cache must hold them.
func Objects() []client.Object {
	return []client.Object{&fabricv1.Tier{}, &fabricv1.FabricPolicy{}, &networkingv1.NetworkPolicy{}, &corev1.Pod{},
		&corev1.Namespace{}, &fabricv1.ClusterPeer{}, &fabricv1.ClusterNetwork{}}
}

// Changed tells the syncer an input changed (the caller's cache handlers call it): Run
// syncs after a 50 ms pause that batches what comes with it.
func (s *Syncer) Changed() { poke(s.changes()) }

func (s *Syncer) changes() chan struct{} {
	s.changedOnce.Do(s.makeChannels)
	return s.changed
}

func (s *Syncer) makeChannels() {
	s.changed, s.learnt = make(chan struct{}, 1), make(chan struct{}, 1)
}

// Run applies the policy on every change until ctx ends, batching changes that come
// within 50 ms, and retrying failures.
func (s *Syncer) Run(ctx context.Context) {
	retry := time.NewTicker(5 * time.Second)
	defer retry.Stop()
	failed := false
	expiry := time.NewTimer(time.Hour)
	defer expiry.Stop()
	s.Changed() // a first round, to report what the node enforces
	changed, learnt := s.changes(), s.learntCh()
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
			select {
			case <-ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
		case <-learnt: // at once: answers are held until it is applied
		case <-retry.C:
			if !failed {
				continue
			}
		case <-expiry.C: // a learnt address expires
		}
		// Every answer learnt before this sync reads the cache is in it: all are released
		// together once it is applied.
		waiting := s.takeLearnWaiters()
		// A datapath that cannot enforce the policy gets it again on the next change, not
		// every few seconds.
		err := s.Sync(ctx)
		for _, w := range waiting {
			close(w)
		}
		failed = err != nil && !errors.Is(err, datapath.ErrPolicyUnsupported)
		s.fqdnMu.Lock()
		next := s.nextExpiry
		s.fqdnMu.Unlock()
		if !next.IsZero() {
			expiry.Reset(time.Until(next) + 10*time.Millisecond)
		}
		if err := s.publish(ctx); err != nil {
			s.Log.Error(err, "reporting the enforced policies")
			failed = true
		}
	}
}

// Sync compiles the policy from the current inputs and applies it if it changed. (Run
// reports what the node enforces to the operator afterwards.)
func (s *Syncer) Sync(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	start := time.Now()
	in, svc, resolvers, err := s.read(ctx)
	if err != nil {
		s.Log.Error(err, "reading the policy's inputs")
		return err
	}
	w, local := World(in)
	patterns := fqdnPatterns(w, local)
	w.Resolved = s.resolvedNow(patterns)
	prog := policy.Compile(w, local)
	want := datapath.Policy{Pipeline: prog.Pipeline(), ServiceCIDRs: svc, DNSPods: sortedKeys(patterns), DNSServers: resolvers}
	compiled := time.Since(start)
	if s.last == nil || !reflect.DeepEqual(*s.last, want) {
		if err := s.Datapath.SetPolicy(ctx, want); err != nil {
			s.Log.Error(err, "applying the policy")
			return err
		}
		s.last = &want
		s.Log.V(1).Info("policy applied", "pods", len(local), "rules", want.Pipeline.Rules(),
			"compile", compiled.Round(time.Microsecond), "total", time.Since(start).Round(time.Millisecond))
	}
	s.policies = in.Policies
	return nil
}

// read lists the policy's inputs, this cluster's Service ranges and the DNS resolvers FQDN
// rules trust (the ClusterNetwork's status.dnsResolvers, which the operator fills).
func (s *Syncer) read(ctx context.Context) (Inputs, []netip.Prefix, []netip.Addr, error) {
	var in Inputs
	tiers := &fabricv1.TierList{}
	fps := &fabricv1.FabricPolicyList{}
	nps := &networkingv1.NetworkPolicyList{}
	pods := &corev1.PodList{}
	nss := &corev1.NamespaceList{}
	peers := &fabricv1.ClusterPeerList{}
	cns := &fabricv1.ClusterNetworkList{}
	for _, l := range []client.ObjectList{tiers, fps, nps, pods, nss, peers, cns} {
		if err := s.Reader.List(ctx, l); err != nil {
			return in, nil, nil, err
		}
	}
	local, err := s.Datapath.Pods(ctx)
	if err != nil {
		return in, nil, nil, err
	}
	in = Inputs{Tiers: tiers.Items, Policies: fps.Items, NetworkPolicies: nps.Items, Pods: pods.Items,
		Namespaces: nss.Items, Peers: peers.Items, Local: local}
	var svc []netip.Prefix
	var resolvers []netip.Addr
	for _, cn := range cns.Items {
		svc = append(svc, fabricv1.CIDRPrefixes(cn.Spec.ServiceCIDRs...)...)
		for _, r := range cn.Status.DNSResolvers {
			if a, err := netip.ParseAddr(r); err == nil {
				resolvers = append(resolvers, a.Unmap())
			}
		}
	}
	return in, svc, resolvers, nil
}

// publish reports which policy generations the node enforces, when that changed.
func (s *Syncer) publish(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.last == nil || s.Report == nil {
		return nil
	}
	val := fabricv1.RealizedPoliciesOf(s.policies)
	if s.reported && reflect.DeepEqual(val, s.published) {
		return nil
	}
	if err := s.Report(ctx, val); err != nil {
		return fmt.Errorf("reporting the enforced policies of node %s: %w", s.Node, err)
	}
	s.published, s.reported = val, true
	return nil
}

// fqdnPatterns are, for each of the node's pods some FabricPolicy with FQDN peers applies
// to, those peers' patterns: the names its DNS answers are learnt for.
func fqdnPatterns(w *oracle.World, local []oracle.Pod) map[netip.Addr][]string {
	out := map[netip.Addr][]string{}
	for _, pod := range local {
		for _, p := range w.Policies {
			if !hasFQDN(p) || !w.AppliesTo(p, pod) {
				continue
			}
			for _, r := range p.Spec.Egress {
				for _, peer := range r.To {
					if peer.FQDN != "" && !slices.Contains(out[pod.IP], peer.FQDN) {
						out[pod.IP] = append(out[pod.IP], peer.FQDN)
					}
				}
			}
		}
	}
	return out
}

func sortedKeys(m map[netip.Addr][]string) []netip.Addr {
	out := make([]netip.Addr, 0, len(m))
	for a := range m {
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func hasFQDN(p fabricv1.FabricPolicy) bool {
	for _, r := range p.Spec.Egress {
		for _, peer := range r.To {
			if peer.FQDN != "" {
				return true
			}
		}
	}
	return false
}
