package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"sort"
	"sync"

	"github.com/weft-net/weft/internal/apiretry"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weft-net/weft/agent/datapath"
	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/podblocks"
)

// nodeReport is the agent's side of its node's FabricNode status: each field it owns is sent
// as a merge patch of that field alone, and only when it differs from what was last sent,
// so that a node at rest writes nothing. When the FabricNode it reads differs from what it
// sent (someone else wrote it, or it was replaced), repair sends the fields again. The
// admission policy weft installs lets the agent write no other node's FabricNode.
type nodeReport struct {
	c    client.Client
	node string

	mu         sync.Mutex
	sent       map[string]string          // field → JSON last sent ("null": removed)
	pending    map[string]json.RawMessage // field → JSON whose sending failed (flush retries)
	failed     chan struct{}              // a send failed: the node network retries (flush)
	conditions []metav1.Condition
}

func newNodeReport(c client.Client, node string) *nodeReport {
	return &nodeReport{c: c, node: node, sent: map[string]string{}, pending: map[string]json.RawMessage{},
		failed: make(chan struct{}, 1)}
}

// set sends status.<field> = value (nil removes it) unless that was the last sent.
func (r *nodeReport) set(ctx context.Context, field string, value any) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.setLocked(ctx, field, value)
}

func (r *nodeReport) setLocked(ctx context.Context, field string, value any) error {
	raw, err := json.Marshal(value)
	if err != nil {
		return err
	}
	if prev, ok := r.sent[field]; ok && prev == string(raw) {
		return nil
	}
	patch, err := json.Marshal(map[string]any{"status": map[string]json.RawMessage{field: raw}})
	if err != nil {
		return err
	}
	fn := &fabricv1.FabricNode{ObjectMeta: metav1.ObjectMeta{Name: r.node}}
	if err := r.c.Status().Patch(ctx, fn, client.RawPatch(types.MergePatchType, patch)); err != nil {
		r.pending[field] = raw
		poke(r.failed)
		return fmt.Errorf("reporting %s in FabricNode %s: %w", field, r.node, err)
	}
	delete(r.pending, field)
	r.sent[field] = string(raw)
	return nil
}

// flush sends again what failed to be sent (the latest value of each field).
func (r *nodeReport) flush(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for field, raw := range r.pending {
		errs = append(errs, r.setLocked(ctx, field, raw))
	}
	return errors.Join(errs...)
}

// repair sends again every field whose value in the FabricNode as read (from the agent's
// cache) is not what was sent.
func (r *nodeReport) repair(ctx context.Context, observed *fabricv1.FabricNode) error {
	raw, err := json.Marshal(observed.Status)
	if err != nil {
		return err
	}
	var have map[string]json.RawMessage
	if err := json.Unmarshal(raw, &have); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for field, want := range r.sent {
		got, ok := have[field]
		if !ok {
			got = json.RawMessage("null")
		}
		if !jsonEqual(got, []byte(want)) {
			delete(r.sent, field)
			errs = append(errs, r.setLocked(ctx, field, json.RawMessage(want)))
		}
	}
	return errors.Join(errs...)
}

// jsonEqual compares two JSON values by meaning, not spelling.
func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

// ready sets the Ready condition.
func (r *nodeReport) ready(ctx context.Context, status metav1.ConditionStatus, reason, message string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	meta.SetStatusCondition(&r.conditions, metav1.Condition{Type: fabricv1.ConditionReady, Status: status, Reason: reason, Message: message})
	return r.setLocked(ctx, "conditions", r.conditions)
}

// realizedPolicies is policysync's Report.
func (r *nodeReport) realizedPolicies(ctx context.Context, ps []fabricv1.RealizedPolicy) error {
	if len(ps) == 0 {
		return r.set(ctx, "realizedPolicies", nil)
	}
	return r.set(ctx, "realizedPolicies", ps)
}

// refused reports the other nodes' blocks this agent does not route to (nil: none).
func (r *nodeReport) refused(ctx context.Context, blocks []fabricv1.RefusedBlock) error {
	if len(blocks) == 0 {
		return r.set(ctx, "refusedBlocks", nil)
	}
	return r.set(ctx, "refusedBlocks", blocks)
}

// remoteNodes checks every other node's claimed blocks (podblocks.Filter: inside the
// cluster's podCIDRs, of its block size, overlapping neither this node's blocks nor an older
// claim) and returns the nodes to route to, sorted by name, with what was refused. A node
// without an InternalIP yet is left out.
func remoteNodes(self string, own []netip.Prefix, pools podblocks.Pools, fabricNodes []fabricv1.FabricNode, nodes []corev1.Node) ([]datapath.RemoteNode, []fabricv1.RefusedBlock) {
	ips := make(map[string]netip.Addr, len(nodes))
	for i := range nodes {
		ips[nodes[i].Name] = internalIP(&nodes[i])
	}
	claims := make([]podblocks.Claim, 0, len(fabricNodes))
	for _, fn := range fabricNodes {
		claims = append(claims, podblocks.Claim{Node: fn.Name, Since: fn.CreationTimestamp.Time, CIDRs: fn.Spec.PodCIDRs})
	}
	accepted, refused := pools.Filter(self, own, claims)
	var out []datapath.RemoteNode
	for _, a := range accepted {
		if ip := ips[a.Node]; ip.IsValid() {
			out = append(out, datapath.RemoteNode{Name: a.Node, IP: ip, PodCIDRs: a.Blocks})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, refused
}

// syncRemotes gives the datapath every other node whose blocks pass the checks, and reports
// (and logs, when it changes) what was refused; it sends again what failed to be reported.
func (a *agentState) syncRemotes(ctx context.Context, dp datapath.Datapath) error {
	fns := &fabricv1.FabricNodeList{}
	if err := a.reader().List(ctx, fns); err != nil {
		return err
	}
	nodes := &corev1.NodeList{}
	if err := a.reader().List(ctx, nodes); err != nil {
		return err
	}
	cn := &fabricv1.ClusterNetwork{}
	if err := a.reader().Get(ctx, client.ObjectKey{Name: fabricv1.ClusterNetworkName}, cn); err != nil {
		return err
	}
	pools := podblocks.Of(cn)
	var reportErrs []error
	for i := range fns.Items {
		if own := &fns.Items[i]; own.Name == a.cfg.NodeName {
			if err := a.report.repair(ctx, own); err != nil {
				reportErrs = append(reportErrs, err)
			}
			if blocks, _ := pools.Own(own.Spec.PodCIDRs); !reflect.DeepEqual(blocks, a.blocks) && !a.blocksChanged {
				a.blocksChanged = true
				// The node's pods have addresses from the blocks the agent started with: it
				// keeps serving them and says so until it is restarted.
				a.log.Error(nil, "this node's FabricNode now names other blocks; the agent keeps serving the ones it started with until it restarts",
					"serving", a.blocks, "fabricNode", own.Spec.PodCIDRs)
				_ = a.report.ready(ctx, metav1.ConditionFalse, "BlocksChanged",
					fmt.Sprintf("serving %v, but the FabricNode names %v: restart the agent (its pods are renumbered)", a.blocks, own.Spec.PodCIDRs))
			}
		}
	}
	remotes, refused := remoteNodes(a.cfg.NodeName, a.blocks, pools, fns.Items, nodes.Items)
	if !reflect.DeepEqual(refused, a.refused) {
		for _, r := range refused {
			a.log.Info("refusing another node's pod block: no route to it", "claimedBy", r.Node, "cidr", r.CIDR, "reason", r.Reason, "detail", r.Message)
		}
		a.refused = refused
	}
	reportErrs = append(reportErrs, a.report.refused(ctx, refused), a.report.flush(ctx))
	// Nodes and FabricNodes change often for other reasons (status, realized policies).
	if !a.remotesSet || !reflect.DeepEqual(a.remotes, remotes) {
		if err := dp.SetRemoteNodes(ctx, remotes); err != nil {
			return errors.Join(append(reportErrs, err)...)
		}
		a.remotes, a.remotesSet = remotes, true
	}
	return errors.Join(reportErrs...)
}

// reportFailed logs a failed report, which the node network sends again (flush): as
// information while the API server connection is merely broken.
func (a *agentState) reportFailed(err error, what string) {
	if apiretry.Transient(err) {
		a.log.Info("the API server connection broke; the node network sends it again", "doing", what, "reason", err.Error())
		return
	}
	a.log.Error(err, what+"; the node network sends it again")
}
