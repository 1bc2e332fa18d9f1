package agent

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/weft-net/weft/agent/cniserver"
	"github.com/weft-net/weft/agent/datapath"
	fakedp "github.com/weft-net/weft/agent/datapath/fake"
	"github.com/weft-net/weft/internal/metricstest"
)

type stubHandler struct{ delErr error }

func (stubHandler) Add(context.Context, cniserver.Call) (*current.Result, error) {
	return &current.Result{}, nil
}
func (h stubHandler) Del(context.Context, cniserver.Call) error    { return h.delErr }
func (stubHandler) Check(context.Context, cniserver.Call) error    { return nil }
func (stubHandler) Status(context.Context) error                   { return nil }
func (stubHandler) GC(context.Context, []types.GCAttachment) error { return nil }

// The agent's metrics time CNI calls by command and result, and count the node's pods and
// what its rules decided when scraped.
func TestAgentMetrics(t *testing.T) {
	ctx := context.Background()
	m := newAgentMetrics()
	h := m.timed(stubHandler{delErr: errors.New("no such pod")})
	if _, err := h.Add(ctx, cniserver.Call{}); err != nil {
		t.Fatal(err)
	}
	_, _ = h.Add(ctx, cniserver.Call{})
	if err := h.Del(ctx, cniserver.Call{}); err == nil {
		t.Fatal("the wrapped handler's error is lost")
	}
	dp := fakedp.New()
	if _, err := dp.AddPod(ctx, datapath.Pod{Key: datapath.PodKey{ContainerID: "c1", IfName: "eth0"}, Namespace: "prod", Name: "a",
		Netns: "/run/netns/a", IPs: []netip.Prefix{netip.MustParsePrefix("10.244.1.5/32")}}); err != nil {
		t.Fatal(err)
	}
	dp.SetRuleCounts([]datapath.RuleCount{
		{Rule: datapath.RuleInfo{Tier: "securityops", Policy: "dev-to-prod", Rule: "reject-8080", Action: "Reject", Direction: "Ingress"}, Packets: 3},
		{Rule: datapath.RuleInfo{Policy: "networkpolicy-isolation", Action: "Drop", Direction: "Egress"}, Packets: 7},
	})
	m.sources.Store(&metricSources{dp: dp, policy: &policyEngine{}})
	got := metricstest.Values(t, m)
	for key, want := range map[string]float64{
		`weft_agent_cni_duration_seconds_count{command="ADD",result="ok"}`:    2,
		`weft_agent_cni_duration_seconds_count{command="DEL",result="error"}`: 1,
		"weft_agent_pods": 1,
		`weft_agent_policy_verdicts_total{action="Reject",direction="Ingress",policy="dev-to-prod",rule="reject-8080",tier="securityops"}`: 3,
		`weft_agent_policy_verdicts_total{action="Drop",direction="Egress",policy="networkpolicy-isolation",rule="",tier=""}`:              7,
	} {
		if got[key] != want {
			t.Errorf("%s = %v, want %v (all: %v)", key, got[key], want, got)
		}
	}
}
