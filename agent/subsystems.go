package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"k8s.io/client-go/tools/cache"
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weft-net/weft/agent/bgp"
	"github.com/weft-net/weft/agent/datapath"
	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// run serves the node until ctx ends or the ClusterNetwork is being deleted. It is the
// agent's table of contents: one informer cache feeds the subsystems below, which start in
// this order (each may use what those before it set up) and stop together.
func (a *agentState) run(ctx context.Context, registry *datapath.Registry, in inputs, shared crcache.Cache, bgpMetrics *bgp.Metrics) error {
	policy := newPolicyEngine(a)
	speaker := &bgpSpeaker{node: newBGPNode(a, bgpMetrics)}
	subsystems := []namedSubsystem{
		// The datapath on this node and the routes to the other nodes' pod blocks.
		{"node-network", &nodeNetwork{a: a, registry: registry, policy: policy}},
		// The tiers and policies this node enforces, FQDN rules' answers, the policy log.
		{"policy", policy},
		// IPAM, the CNI server, the weft-cni plugin and its configuration: pods start.
		{"pod-network", &podNetwork{a: a, policy: policy}},
		// Routes to peer clusters through this cluster's healthy gateways, and failover.
		{"peer-routes", &peerRouting{a: a}},
		// Pods' traffic leaving the cluster: the node's address (spec.egress).
		{"egress", &egressNAT{a: a}},
		// The node's BGP speaker: blocks, Services and imports, the BGPNode status.
		{"bgp", speaker},
		// Ends run when the ClusterNetwork is being deleted (uninstall follows).
		{"uninstall", &uninstallWatch{bgp: speaker}},
	}
	return a.runSubsystems(ctx, in, shared, subsystems)
}

// subsystem is one named part of the agent. start sets it up from the shared cache and
// returns once it serves; what it runs in the background ends with ctx (through f.spawn)
// and a fatal error ends run (f.fail).
type subsystem interface {
	start(ctx context.Context, f *fabric) error
}

type namedSubsystem struct {
	name string
	subsystem
}

// fabric is what every subsystem is fed from: the node's inputs, the shared informer cache,
// and run's lifecycle.
type fabric struct {
	in       inputs
	cache    crcache.Cache
	datapath datapath.Datapath // from the node network on
	wg       sync.WaitGroup
	errs     chan error
	stops    []func() // run in reverse once every goroutine ended
}

// spawn runs f in the background until run ends.
func (f *fabric) spawn(fn func()) {
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		fn()
	}()
}

// fail ends run with err (the first error wins).
func (f *fabric) fail(err error) {
	select {
	case f.errs <- err:
	default:
	}
}

// onStop registers what to release once run's goroutines have ended (datapath, IPAM).
func (f *fabric) onStop(fn func()) { f.stops = append(f.stops, fn) }

// watch calls changed on every add, update and delete of the kinds given (from the shared
// cache; handlers added after its first list get the objects it holds as adds).
func (f *fabric) watch(ctx context.Context, changed func(), objs ...client.Object) error {
	_, err := watchKinds(ctx, f.cache, changed, objs...)
	return err
}

// watchKinds calls changed on every add, update and delete of the kinds given in c until
// the returned func removes the handlers (it may be called after an error too).
func watchKinds(ctx context.Context, c crcache.Cache, changed func(), objs ...client.Object) (func(), error) {
	var remove []func()
	unwatch := func() {
		for _, r := range remove {
			r()
		}
	}
	for _, o := range objs {
		inf, err := c.GetInformer(ctx, o)
		if err != nil {
			return unwatch, err
		}
		reg, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: func(any) { changed() }, UpdateFunc: func(any, any) { changed() }, DeleteFunc: func(any) { changed() },
		})
		if err != nil {
			return unwatch, err
		}
		remove = append(remove, func() { _ = inf.RemoveEventHandler(reg) })
	}
	return unwatch, nil
}

// runSubsystems starts the subsystems in order on the shared cache, then waits for ctx or a
// subsystem's fatal error; on the way out every goroutine ends before anything is released.
func (a *agentState) runSubsystems(ctx context.Context, in inputs, shared crcache.Cache, subsystems []namedSubsystem) error {
	ctx, stop := context.WithCancel(ctx)
	f := &fabric{in: in, cache: shared, errs: make(chan error, 1)}
	defer func() {
		stop()
		f.wg.Wait()
		for _, fn := range slices.Backward(f.stops) {
			fn()
		}
	}()
	for _, s := range subsystems {
		start := time.Now()
		if err := s.start(ctx, f); err != nil {
			if errors.Is(err, errUninstalling) {
				return err
			}
			return fmt.Errorf("%s: %w", s.name, err)
		}
		a.log.V(1).Info("subsystem started", "subsystem", s.name, "took", time.Since(start).Round(time.Millisecond))
	}
	select {
	case <-ctx.Done():
		a.notReady.Store("stopping")
		return nil
	case err := <-f.errs:
		return err
	}
}

// cachedKinds are the kinds the shared cache lists before any subsystem starts (besides the
// policy's). Kinds only some configurations need (BGP's Services) join when first watched.
func cachedKinds() []client.Object {
	return []client.Object{&corev1.Node{}, &fabricv1.FabricNode{}, &fabricv1.ClusterNetwork{}, &fabricv1.ClusterPeer{}}
}

// poke wakes a loop without blocking (one pending wake-up is enough).
func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
