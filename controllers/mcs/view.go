package mcs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/labels"
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

// Records are what one cluster publishes of its exports.
type Records struct {
	Cluster   string
	Exports   map[mcs.Key]mcs.Export
	Endpoints map[mcs.Key][]discoveryv1.EndpointSlice
}

// View reads the export records of this cluster and of every Ready peer, in the operator's
// namespace of each. Each Ready peer's records are watched (an informer cache per peer,
// limited to the records in that namespace); a change there calls the OnChange functions
// with the Service it is about. A peer that is
// not Ready (or gone) contributes nothing: its services leave the imports.
type View struct {
	Client    client.Client // this cluster
	Reader    client.Reader // uncached reads (Secrets)
	Namespace string
	Scheme    *runtime.Scheme
	lmu       sync.Mutex // guards listeners (apart from mu: informers call them)
	listeners []func(mcs.Key)

	mu    sync.Mutex
	base  context.Context        // the peers' watches live as long as this
	peers map[string]*peerReader // by ClusterPeer name
}

type peerReader struct {
	secretVersion string
	cache         cache.Cache
	stop          context.CancelFunc
}

// peerSyncWait bounds how long a read waits for a new peer's first listing.
const peerSyncWait = 5 * time.Second

// Run ties the peers' watches to ctx: they stop when it ends.
func (v *View) Run(ctx context.Context) {
	v.mu.Lock()
	v.base = ctx
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

// Read returns the records of this cluster and of its Ready peers.
func (v *View) Read(ctx context.Context) ([]Records, error) {
	self, err := v.ClusterID(ctx)
	if err != nil {
		return nil, err
	}
	var out []Records
	if self != "" {
		own, err := readRecords(ctx, v.Client, v.Namespace, self)
		if err != nil {
			return nil, err
		}
		out = append(out, *own)
	}
	peers := &fabricv1.ClusterPeerList{}
	if err := v.Client.List(ctx, peers); err != nil {
		return nil, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.peers == nil {
		v.peers = map[string]*peerReader{}
	}
	seen := map[string]bool{}
	var errs []error
	for i := range peers.Items {
		p := &peers.Items[i]
		if !meta.IsStatusConditionTrue(p.Status.Conditions, "Ready") || p.Spec.ClusterID == self {
			continue
		}
		seen[p.Name] = true
		pr, err := v.peerReader(ctx, p)
		if err != nil {
			errs = append(errs, fmt.Errorf("peer %s: %w", p.Name, err))
			continue
		}
		recs, err := readRecords(ctx, pr.cache, v.Namespace, p.Spec.ClusterID)
		if err != nil {
			errs = append(errs, fmt.Errorf("reading the export records of peer %s: %w", p.Name, err))
			continue
		}
		out = append(out, *recs)
	}
	for name, pr := range v.peers {
		if !seen[name] {
			pr.stop()
			delete(v.peers, name)
		}
	}
	return out, errors.Join(errs...)
}

// peerReader gives the watch of the peer's records, made again when its Secret changed.
func (v *View) peerReader(ctx context.Context, p *fabricv1.ClusterPeer) (*peerReader, error) {
	ref := p.Spec.KubeconfigSecretRef
	key := ref.Key
	if key == "" {
		key = "kubeconfig"
	}
	secret := &corev1.Secret{}
	if err := v.Reader.Get(ctx, types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name}, secret); err != nil {
		return nil, err
	}
	if pr := v.peers[p.Name]; pr != nil && pr.secretVersion == secret.ResourceVersion {
		return pr, nil
	}
	cfg, err := clusterpeer.RESTConfig(secret.Data[key])
	if err != nil {
		return nil, err
	}
	c, err := cache.New(cfg, cache.Options{Scheme: v.Scheme,
		DefaultNamespaces:    map[string]cache.Config{v.Namespace: {}},
		DefaultLabelSelector: labels.SelectorFromSet(labels.Set{mcs.LabelRecord: "true"})})
	if err != nil {
		return nil, err
	}
	base := v.base
	if base == nil {
		base = context.Background()
	}
	wctx, stop := context.WithCancel(base)
	for _, o := range []client.Object{&mcsv1.ServiceImport{}, &discoveryv1.EndpointSlice{}} {
		inf, err := c.GetInformer(wctx, o)
		if err == nil {
			_, err = inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
				AddFunc: v.changed, UpdateFunc: func(_, o any) { v.changed(o) }, DeleteFunc: v.changed})
		}
		if err != nil {
			stop()
			return nil, err
		}
	}
	go func() { _ = c.Start(wctx) }()
	sctx, cancel := context.WithTimeout(ctx, peerSyncWait)
	defer cancel()
	if !c.WaitForCacheSync(sctx) {
		stop()
		return nil, errors.New("its export records could not be listed yet")
	}
	if old := v.peers[p.Name]; old != nil {
		old.stop()
	}
	pr := &peerReader{secretVersion: secret.ResourceVersion, cache: c, stop: stop}
	v.peers[p.Name] = pr
	return pr, nil
}

// OnChange registers fn, called with the Service whose records changed in a peer.
func (v *View) OnChange(fn func(mcs.Key)) {
	v.lmu.Lock()
	defer v.lmu.Unlock()
	v.listeners = append(v.listeners, fn)
}

// changed tells the listeners about a record a peer's informer saw change.
func (v *View) changed(obj any) {
	if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	o, ok := obj.(client.Object)
	if !ok {
		return
	}
	k := mcs.Key{Namespace: o.GetLabels()[mcs.LabelServiceNamespace], Name: o.GetLabels()[mcsv1.LabelServiceName]}
	if k.Namespace == "" || k.Name == "" {
		return
	}
	v.lmu.Lock()
	ls := slices.Clone(v.listeners)
	v.lmu.Unlock()
	for _, fn := range ls {
		fn(k)
	}
}

func readRecords(ctx context.Context, c client.Reader, namespace, cluster string) (*Records, error) {
	sel := client.MatchingLabels{mcs.LabelRecord: "true", mcsv1.LabelSourceCluster: cluster}
	imports := &mcsv1.ServiceImportList{}
	if err := c.List(ctx, imports, client.InNamespace(namespace), sel); err != nil {
		return nil, err
	}
	slices := &discoveryv1.EndpointSliceList{}
	if err := c.List(ctx, slices, client.InNamespace(namespace), sel); err != nil {
		return nil, err
	}
	r := &Records{Cluster: cluster, Exports: map[mcs.Key]mcs.Export{}, Endpoints: map[mcs.Key][]discoveryv1.EndpointSlice{}}
	for i := range imports.Items {
		if k, e, ok := mcs.FromRecord(&imports.Items[i]); ok && e.Cluster == cluster {
			r.Exports[k] = e
		}
	}
	for _, s := range slices.Items {
		k := mcs.Key{Namespace: s.Labels[mcs.LabelServiceNamespace], Name: s.Labels[mcsv1.LabelServiceName]}
		if _, ok := r.Exports[k]; ok {
			r.Endpoints[k] = append(r.Endpoints[k], s)
		}
	}
	return r, nil
}

// exportsOf gathers the exports of one Service across the clusters.
func exportsOf(recs []Records, k mcs.Key) []mcs.Export {
	var out []mcs.Export
	for _, r := range recs {
		if e, ok := r.Exports[k]; ok {
			out = append(out, e)
		}
	}
	return out
}
