package agent

import (
	"context"
	"errors"
	"sort"
	"time"

	"github.com/weft-net/weft/internal/apiretry"

	corev1 "k8s.io/api/core/v1"

	"github.com/weft-net/weft/agent/datapath"
	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// nodeNetwork is the datapath on this node: it publishes what the backends can do here,
// initializes the configured one with the node's blocks, and keeps its routes to the other
// nodes' blocks current (those that pass the checks of internal/podblocks).
type nodeNetwork struct {
	a        *agentState
	registry *datapath.Registry
	policy   *policyEngine // the datapath reports policy matches and DNS answers to it
}

func (n *nodeNetwork) start(ctx context.Context, f *fabric) error {
	a, in := n.a, f.in
	if err := a.publishCapabilities(ctx, n.registry, in.backend); err != nil {
		a.reportFailed(err, "publishing the datapath capabilities of this node")
	}
	dp, err := n.registry.New(string(in.backend), a.datapathOptions(n.policy.event, n.policy.learnDNS))
	if err != nil {
		return err
	}
	f.onStop(func() { _ = dp.Close() })
	if err := a.initDatapath(ctx, dp, in.node); err != nil {
		return err
	}
	f.datapath = dp
	a.log.Info("datapath initialized", "mode", dp.Capabilities().Mode, "blocks", in.node.PodCIDRs)
	a.blocks = in.node.PodCIDRs
	changed := make(chan struct{}, 1)
	var failingSince time.Time
	// sync programs the remote nodes and reports; it says whether to retry. A broken API
	// server connection is retried quietly for a while (the routes do not depend on it).
	sync := func() bool {
		err := a.syncRemotes(ctx, dp)
		if err == nil || ctx.Err() != nil {
			failingSince = time.Time{}
			return false
		}
		if failingSince.IsZero() {
			failingSince = time.Now()
		}
		if apiretry.Transient(err) && time.Since(failingSince) < apiretry.Grace {
			a.log.Info("the API server connection broke; retrying", "reason", err.Error())
		} else {
			a.log.Error(err, "programming remote nodes and reporting on them; retrying")
		}
		return true
	}
	retry := sync()
	// The pod ranges (ClusterNetwork) decide which claims pass.
	if err := f.watch(ctx, func() { poke(changed) }, &corev1.Node{}, &fabricv1.FabricNode{}, &fabricv1.ClusterNetwork{}); err != nil {
		return err
	}
	f.spawn(func() {
		for {
			var again <-chan time.Time
			if retry {
				again = time.After(apiretry.Retry)
			}
			select {
			case <-ctx.Done():
				return
			case <-changed:
			case <-again:
			case <-a.report.failed:
				// A report failed (here or elsewhere in the agent): flushed in a while.
				retry = true
				continue
			}
			retry = sync()
		}
	})
	return nil
}

// publishCapabilities reports in the node's FabricNode the backend it runs and what each
// datapath backend can do there.
func (a *agentState) publishCapabilities(ctx context.Context, registry *datapath.Registry, backend fabricv1.DatapathBackend) error {
	var caps []fabricv1.DatapathCapability
	for _, name := range registry.Names() {
		dp, err := registry.New(name, datapath.Options{})
		if err != nil {
			return err
		}
		c := fabricv1.DatapathCapability{Backend: fabricv1.DatapathBackend(name)}
		for _, e := range dp.Capabilities().Encapsulations {
			c.Encapsulations = append(c.Encapsulations, fabricv1.Encapsulation(e))
		}
		caps = append(caps, c)
	}
	sort.Slice(caps, func(i, j int) bool { return caps[i].Backend < caps[j].Backend })
	return errors.Join(a.report.set(ctx, "datapath", backend), a.report.set(ctx, "capabilities", caps))
}

// datapathStartGrace is how long the datapath may take to become ready (Open vSwitch
// starting beside the agent) before retries are logged as errors.
const datapathStartGrace = 30 * time.Second

// initDatapath retries Init with backoff: Open vSwitch may start after the agent, which is
// no error (logged as information) unless it lasts.
func (a *agentState) initDatapath(ctx context.Context, dp datapath.Datapath, node datapath.Node) error {
	backoff, start := 500*time.Millisecond, time.Now()
	for {
		err := dp.Init(ctx, node)
		if err == nil {
			return nil
		}
		a.notReady.Store("datapath: " + err.Error())
		if time.Since(start) < datapathStartGrace {
			a.log.Info("the datapath is not ready yet; retrying", "reason", err.Error(), "in", backoff)
		} else {
			a.log.Error(err, "initializing the datapath; retrying", "in", backoff)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}
