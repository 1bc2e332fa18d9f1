package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weft-net/weft/agent/bgp"
	"github.com/weft-net/weft/agent/datapath"
	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// uninstallWatch ends run when the ClusterNetwork is being deleted and waits for the agents'
// cleanup: it has the BGP speaker withdraw the node's routes first, then Run removes weft
// from the node (agentState.uninstall).
type uninstallWatch struct {
	bgp *bgpSpeaker
}

func (u *uninstallWatch) start(ctx context.Context, f *fabric) error {
	changed := make(chan struct{}, 1)
	if err := f.watch(ctx, func() { poke(changed) }, &fabricv1.ClusterNetwork{}); err != nil {
		return err
	}
	f.spawn(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-changed:
			}
			cn := &fabricv1.ClusterNetwork{}
			if err := f.cache.Get(ctx, client.ObjectKey{Name: fabricv1.ClusterNetworkName}, cn); err != nil || !uninstalling(cn) {
				continue
			}
			u.bgp.withdrawAll(ctx)
			f.fail(errUninstalling)
			return
		}
	})
	return nil
}

// errUninstalling ends run when the ClusterNetwork is being deleted: weft is being
// uninstalled, and the agent removes it from the node.
var errUninstalling = errors.New("the ClusterNetwork is being deleted")

// uninstalling says whether the ClusterNetwork's deletion waits for the agents' cleanup.
func uninstalling(cn *fabricv1.ClusterNetwork) bool {
	return !cn.DeletionTimestamp.IsZero() && slices.Contains(cn.Finalizers, fabricv1.FinalizerNodeCleanup)
}

// uninstall removes weft from the node — the CNI configuration, the datapath, the routes
// BGP imported, the node's BGPNode — retrying until it all went, then says so on the Node
// (the operator lets the ClusterNetwork go once every agent did) and waits for its end.
func (a *agentState) uninstall(ctx context.Context, registry *datapath.Registry, in inputs) error {
	log := a.log.WithValues("datapath", in.backend)
	a.notReady.Store("weft is being uninstalled")
	log.Info("the ClusterNetwork is being deleted: removing weft from this node")
	a.removeConf()
	dp, err := registry.New(string(in.backend), a.datapathOptions(nil, nil))
	if err != nil {
		return err
	}
	defer dp.Close()
	backoff := 500 * time.Millisecond
	for {
		start := time.Now()
		err := a.removeFromNode(ctx, dp, in)
		if err == nil {
			log.Info("weft removed from this node", "took", time.Since(start).Round(time.Millisecond))
			break
		}
		log.Error(err, "removing weft from this node; retrying", "in", backoff)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
	a.notReady.Store("weft was uninstalled from this node")
	<-ctx.Done()
	return nil
}

func (a *agentState) removeFromNode(ctx context.Context, dp datapath.Datapath, in inputs) error {
	if err := dp.Uninstall(ctx, in.node); err != nil {
		return fmt.Errorf("datapath: %w", err)
	}
	if err := (bgp.KernelRoutes{}).Sync(nil, nil); err != nil {
		return fmt.Errorf("routes BGP peers announced: %w", err)
	}
	if err := removeEgress(); err != nil {
		return fmt.Errorf("egress masquerade: %w", err)
	}
	_ = os.Remove(filepath.Join(a.cfg.StateDir, speakerMark))
	_ = os.Remove(filepath.Join(a.cfg.StateDir, lastKnownRoutesFile))
	err := a.c.Delete(ctx, &fabricv1.BGPNode{ObjectMeta: metav1.ObjectMeta{Name: a.cfg.NodeName}})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("the node's BGPNode: %w", err)
	}
	if err := a.report.ready(ctx, metav1.ConditionFalse, "Uninstalled", "weft was removed from this node"); err != nil {
		return err
	}
	return a.report.set(ctx, "cleanup", fabricv1.FabricNodeCleanup{ClusterNetworkUID: string(in.cnUID), Time: metav1.Now()})
}
