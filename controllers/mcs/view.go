package mcs

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcsv1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/controllers/clusterpeer"
	"github.com/weft-net/weft/internal/mcs"
)

// ClusterRecord is one cluster's export of one Service, as its record says — a peer's
// endpoints only where they lie in the pod ranges that peer may claim, and as this cluster
// sees them (their aliases, where the peer's ranges have some).
type ClusterRecord struct {
	Key       mcs.Key
	Export    mcs.Export
	Endpoints []fabricv1.RecordEndpoints
	// Dropped are the addresses of a peer's record that lie outside its accepted pod
	// ranges: not imported.
	Dropped []string
}

// View is what this cluster knows of every cluster's exports: its own records (in the
// manager's cache) and those of each Accepted peer (an informer on the records in the peer's
// operator namespace, one per peer). Reading it makes no API call, so reconcilers read it
// as often as they like. SyncPeers follows the ClusterPeers: it starts a peer's informer when
// the peer becomes Ready or is given a new credential, and stops it when the peer goes. The
// OnChange listeners hear of every Service a change concerns: a record changed in a peer, a
// peer came or went (all its Services), this cluster got its ID (all Services).
type View struct {
	Client    client.Client // this cluster, through the manager's cache
	Namespace string
	Scheme    *runtime.Scheme

	lmu       sync.Mutex // guards listeners (apart from mu: informers call them)
	listeners []func(mcs.Key)

	mu      sync.Mutex
	base    context.Context        // the peers' informers live as long as this
	started time.Time              // when Run began: this cluster's records are read since
	self    string                 // this cluster's ID, as SyncPeers last read it
	peers   map[string]*peerReader // by ClusterPeer name
	// ranges are the pod ranges each peer (by cluster ID) may claim, as its ClusterPeer's
	// status says (what the clusterpeer controller accepted), each with how this cluster
	// sees it; its endpoints must lie there.
	ranges map[string][]fabricv1.RangeMap
}

type peerReader struct {
	clusterID     string
	secretVersion string
	cache         cache.Cache
	stop          context.CancelFunc
	since         time.Time // when its informer started: what it lists first was exported before
}

// peerSyncWait bounds how long SyncPeers waits for a new peer's first listing.
const peerSyncWait = 10 * time.Second

// Run ties the peers' informers to ctx: they stop when it ends.
func (v *View) Run(ctx context.Context) {
	v.mu.Lock()
	v.base, v.started = ctx, time.Now()
	v.mu.Unlock()
	<-ctx.Done()
	v.mu.Lock()
	defer v.mu.Unlock()
	for name, pr := range v.peers {
		pr.stop()
		delete(v.peers, name)
	}
}

// ClusterID is this cluster's ID ("" until the ClusterNetwork names it).
func (v *View) ClusterID(ctx context.Context) (string, error) {
	cn := &fabricv1.ClusterNetwork{}
	if err := v.Client.Get(ctx, types.NamespacedName{Name: fabricv1.ClusterNetworkName}, cn); err != nil {
		return "", client.IgnoreNotFound(err)
	}
	return cn.Spec.ClusterID, nil
}

// Exports returns every cluster's record of the Service k: this cluster's first, then its
// Accepted peers'.
func (v *View) Exports(ctx context.Context, k mcs.Key) ([]ClusterRecord, error) {
	self, err := v.ClusterID(ctx)
	if err != nil {
		return nil, err
	}
	var out []ClusterRecord
	if self != "" {
		own, err := recordsOf(ctx, v.Client, v.Namespace, mcs.RecordLabels(k, self))
		if err != nil {
			return nil, err
		}
		out = append(out, own...)
	}
	for _, pr := range v.readers() {
		recs, err := recordsOf(ctx, pr.cache, v.Namespace, mcs.RecordLabels(k, pr.clusterID))
		if err != nil {
			return nil, fmt.Errorf("the records of peer %s: %w", pr.clusterID, err)
		}
		v.mu.Lock()
		ranges := v.ranges[pr.clusterID]
		v.mu.Unlock()
		for i := range recs {
			recs[i].Endpoints, recs[i].Dropped = withinRanges(recs[i].Endpoints, ranges)
		}
		out = append(out, recs...)
	}
	return out, nil
}

// withinRanges is eps (a peer's record's endpoints; not changed: they are its informer's)
// with only the addresses inside ranges, each as this cluster sees it (its alias), and the
// addresses left out. An endpoint left with no address goes.
func withinRanges(eps []fabricv1.RecordEndpoints, ranges []fabricv1.RangeMap) (kept []fabricv1.RecordEndpoints, dropped []string) {
	seen := func(a string) (string, bool) {
		ip, err := netip.ParseAddr(a)
		if err != nil {
			return "", false
		}
		for _, m := range ranges {
			if local, ok := m.Translate(ip); ok {
				return local.String(), true
			}
		}
		return "", false
	}
	for _, e := range eps {
		out := e
		out.Endpoints = nil
		for _, ep := range e.Endpoints {
			var addrs []string
			for _, a := range ep.Addresses {
				if local, ok := seen(a); ok {
					addrs = append(addrs, local)
				} else {
					dropped = append(dropped, a)
				}
			}
			if len(addrs) > 0 {
				ep.Addresses = addrs
				out.Endpoints = append(out.Endpoints, ep)
			}
		}
		kept = append(kept, out)
	}
	return kept, dropped
}

// Keys returns every Service some cluster exports, in namespace ns ("" for all).
func (v *View) Keys(ctx context.Context, ns string) []mcs.Key {
	self, _ := v.ClusterID(ctx)
	seen := map[mcs.Key]bool{}
	var out []mcs.Key
	add := func(c client.Reader, cluster string) {
		if cluster == "" {
			return
		}
		labels := map[string]string{}
		if ns != "" {
			labels[mcs.LabelServiceNamespace] = ns
		}
		recs, _ := recordsOf(ctx, c, v.Namespace, labels)
		for _, r := range recs {
			if !seen[r.Key] {
				seen[r.Key] = true
				out = append(out, r.Key)
			}
		}
	}
	add(v.Client, self)
	for _, pr := range v.readers() {
		add(pr.cache, pr.clusterID)
	}
	return out
}

// ReadSince is when the view began reading cluster's records (this cluster's or a peer's by
// ID; zero for one it does not read): exports made before were there when it started, and
// importing them says nothing of how fast an export travels.
func (v *View) ReadSince(ctx context.Context, cluster string) time.Time {
	if self, _ := v.ClusterID(ctx); cluster == self {
		v.mu.Lock()
		defer v.mu.Unlock()
		return v.started
	}
	for _, pr := range v.readers() {
		if pr.clusterID == cluster {
			return pr.since
		}
	}
	return time.Time{}
}

// RecordCounts is how many Services each cluster whose records the view reads exports
// (this cluster's too), by cluster ID, from the caches.
func (v *View) RecordCounts(ctx context.Context) map[string]int {
	out := map[string]int{}
	if self, _ := v.ClusterID(ctx); self != "" {
		recs, _ := recordsOf(ctx, v.Client, v.Namespace, map[string]string{mcsv1.LabelSourceCluster: self})
		out[self] = len(recs)
	}
	for _, pr := range v.readers() {
		out[pr.clusterID] = len(keysOf(ctx, pr, v.Namespace))
	}
	return out
}

func (v *View) readers() []*peerReader {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Collect(maps.Values(v.peers))
}

// Unread returns the cluster IDs of the peers in force whose records the view does not read
// yet (their informer not made, or not synced: a new operator leader before SyncPeers ran,
// or a peer whose API server is away): what they export is unknown, not absent.
func (v *View) Unread(ctx context.Context) (map[string]bool, error) {
	self, err := v.ClusterID(ctx)
	if err != nil {
		return nil, err
	}
	peers := &fabricv1.ClusterPeerList{}
	if err := v.Client.List(ctx, peers); err != nil {
		return nil, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	var unread map[string]bool
	for i := range peers.Items {
		p := &peers.Items[i]
		if !p.Status.InForce() || p.Spec.ClusterID == self || p.DeletionTimestamp != nil {
			continue
		}
		if pr := v.peers[p.Name]; pr == nil || pr.clusterID != p.Spec.ClusterID {
			if unread == nil {
				unread = map[string]bool{}
			}
			unread[p.Spec.ClusterID] = true
		}
	}
	return unread, nil
}

// SyncPeers reads the ClusterPeers and this cluster's ID and makes the peers' informers
// follow: one per Accepted peer, made again when its Secret changed. Only SyncPeers' caller
// (one worker) runs it.
func (v *View) SyncPeers(ctx context.Context) error {
	self, err := v.ClusterID(ctx)
	if err != nil {
		return err
	}
	peers := &fabricv1.ClusterPeerList{}
	if err := v.Client.List(ctx, peers); err != nil {
		return err
	}
	v.mu.Lock()
	if v.peers == nil {
		v.peers = map[string]*peerReader{}
	}
	selfChanged := self != v.self
	v.self = self
	current := maps.Clone(v.peers)
	v.mu.Unlock()
	if selfChanged {
		v.notify(v.Keys(ctx, ""))
	}

	wanted := map[string]bool{}
	var errs []error
	for i := range peers.Items {
		p := &peers.Items[i]
		if !p.Status.InForce() || p.Spec.ClusterID == self || p.DeletionTimestamp != nil {
			continue
		}
		wanted[p.Name] = true
		// The ranges its endpoints must lie in; when they change, its imports are judged again.
		ranges := p.Status.PodRanges()
		v.mu.Lock()
		if v.ranges == nil {
			v.ranges = map[string][]fabricv1.RangeMap{}
		}
		changed := !slices.Equal(v.ranges[p.Spec.ClusterID], ranges)
		v.ranges[p.Spec.ClusterID] = ranges
		v.mu.Unlock()
		if old := current[p.Name]; changed && old != nil {
			v.notify(keysOf(ctx, old, v.Namespace))
		}
		secret, err := v.secret(ctx, p)
		if err != nil {
			errs = append(errs, fmt.Errorf("peer %s: %w", p.Name, err))
			continue
		}
		old := current[p.Name]
		if old != nil && old.secretVersion == secret.ResourceVersion && old.clusterID == p.Spec.ClusterID {
			continue
		}
		pr, err := v.startReader(ctx, p, secret)
		if err != nil {
			errs = append(errs, fmt.Errorf("peer %s: %w", p.Name, err))
			continue
		}
		v.mu.Lock()
		v.peers[p.Name] = pr
		v.mu.Unlock()
		if old != nil {
			v.notify(keysOf(ctx, old, v.Namespace))
			old.stop()
		}
		v.notify(keysOf(ctx, pr, v.Namespace))
	}
	for name, pr := range current {
		if wanted[name] {
			continue
		}
		v.mu.Lock()
		delete(v.peers, name)
		v.mu.Unlock()
		v.notify(keysOf(ctx, pr, v.Namespace))
		pr.stop()
	}
	return errors.Join(errs...)
}

// secret reads a peer's kubeconfig Secret from the cache: it must be in the operator's
// namespace, the only one where the operator reads Secrets (the ClusterPeer says so).
func (v *View) secret(ctx context.Context, p *fabricv1.ClusterPeer) (*corev1.Secret, error) {
	ref := p.Spec.KubeconfigSecretRef
	if ref.Namespace != v.Namespace {
		return nil, fmt.Errorf("kubeconfig Secret %s/%s is outside the operator's namespace %s", ref.Namespace, ref.Name, v.Namespace)
	}
	secret := &corev1.Secret{}
	if err := v.Client.Get(ctx, types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name}, secret); err != nil {
		return nil, err
	}
	return secret, nil
}

// startReader makes the informer on a peer's records and waits for its first listing.
func (v *View) startReader(ctx context.Context, p *fabricv1.ClusterPeer, secret *corev1.Secret) (*peerReader, error) {
	key := p.Spec.KubeconfigSecretRef.Key
	if key == "" {
		key = "kubeconfig"
	}
	cfg, err := clusterpeer.RESTConfig(secret.Data[key])
	if err != nil {
		return nil, err
	}
	c, err := cache.New(cfg, cache.Options{Scheme: v.Scheme, DefaultNamespaces: map[string]cache.Config{v.Namespace: {}}})
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	base := v.base
	v.mu.Unlock()
	if base == nil {
		base = context.Background()
	}
	wctx, stop := context.WithCancel(base)
	inf, err := c.GetInformer(wctx, &fabricv1.ExportRecord{})
	if err == nil {
		_, err = inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc: v.changed, UpdateFunc: func(_, o any) { v.changed(o) }, DeleteFunc: v.changed})
	}
	if err != nil {
		stop()
		return nil, err
	}
	since := time.Now()
	go func() { _ = c.Start(wctx) }()
	sctx, cancel := context.WithTimeout(ctx, peerSyncWait)
	defer cancel()
	if !c.WaitForCacheSync(sctx) {
		stop()
		return nil, errors.New("its export records could not be listed yet")
	}
	return &peerReader{clusterID: p.Spec.ClusterID, secretVersion: secret.ResourceVersion, cache: c, stop: stop, since: since}, nil
}

// keysOf lists the Services a peer exports, as its informer has them.
func keysOf(ctx context.Context, pr *peerReader, namespace string) []mcs.Key {
	recs, _ := recordsOf(ctx, pr.cache, namespace, map[string]string{})
	out := make([]mcs.Key, 0, len(recs))
	for _, r := range recs {
		out = append(out, r.Key)
	}
	return out
}

// OnChange registers fn, called with each Service whose records changed.
func (v *View) OnChange(fn func(mcs.Key)) {
	v.lmu.Lock()
	defer v.lmu.Unlock()
	v.listeners = append(v.listeners, fn)
}

func (v *View) notify(keys []mcs.Key) {
	v.lmu.Lock()
	ls := slices.Clone(v.listeners)
	v.lmu.Unlock()
	for _, k := range keys {
		for _, fn := range ls {
			fn(k)
		}
	}
}

// changed tells the listeners about a record a peer's informer saw change.
func (v *View) changed(obj any) {
	if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	r, ok := obj.(*fabricv1.ExportRecord)
	if !ok || r.Spec.Service.Namespace == "" || r.Spec.Service.Name == "" {
		return
	}
	v.notify([]mcs.Key{{Namespace: r.Spec.Service.Namespace, Name: r.Spec.Service.Name}})
}

// recordsOf lists the records in namespace with the given labels.
func recordsOf(ctx context.Context, c client.Reader, namespace string, labels map[string]string) ([]ClusterRecord, error) {
	list := &fabricv1.ExportRecordList{}
	if err := c.List(ctx, list, client.InNamespace(namespace), client.MatchingLabels(labels)); err != nil {
		return nil, err
	}
	out := make([]ClusterRecord, 0, len(list.Items))
	for i := range list.Items {
		r := &list.Items[i]
		if k, e, ok := mcs.FromRecord(r); ok {
			out = append(out, ClusterRecord{Key: k, Export: e, Endpoints: r.Spec.Endpoints})
		}
	}
	return out, nil
}

// exportsOf gathers the exports of one Service across the clusters.
func exportsOf(recs []ClusterRecord) []mcs.Export {
	out := make([]mcs.Export, len(recs))
	for i, r := range recs {
		out[i] = r.Export
	}
	return out
}
