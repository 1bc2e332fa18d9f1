// Package fake is an in-memory Datapath for tests of the agent's control logic that need
// neither root nor Open vSwitch. It records what it is asked and can be told to fail.
package fake

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sort"
	"sync"

	"github.com/weft-net/weft/agent/datapath"
)

// Datapath remembers pods and remote nodes.
type Datapath struct {
	mu      sync.Mutex
	policy  datapath.Policy
	node    datapath.Node
	pods    map[datapath.PodKey]datapath.Pod
	remotes []datapath.RemoteNode
	peers   datapath.PeerRoutes
	// ruleCounts is what RuleCounts returns.
	ruleCounts []datapath.RuleCount
	// FailAdd makes AddPod fail with this error.
	FailAdd error
	// Uninstalls counts Uninstall calls.
	Uninstalls int
}

var _ datapath.Datapath = (*Datapath)(nil)

// New returns an empty fake.
func New() *Datapath { return &Datapath{pods: map[datapath.PodKey]datapath.Pod{}} }

func (d *Datapath) Init(_ context.Context, n datapath.Node) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.node = n
	return nil
}

func (d *Datapath) AddPod(_ context.Context, p datapath.Pod) (datapath.PodResult, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.FailAdd != nil {
		return datapath.PodResult{}, d.FailAdd
	}
	if p.Netns == "" {
		return datapath.PodResult{}, errors.New("no network namespace")
	}
	d.pods[p.Key] = p
	var gws []netip.Addr
	for _, ip := range p.IPs {
		gws = append(gws, datapath.Gateway(ip.Masked()))
	}
	return datapath.PodResult{HostInterface: "fake-" + p.Key.ContainerID, Interface: p.Key.IfName, MAC: "0a:58:00:00:00:02",
		MTU: datapath.PodMTU(1500, 50), IPs: p.IPs, Gateways: gws}, nil
}

func (d *Datapath) DelPod(_ context.Context, k datapath.PodKey) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.pods, k)
	return nil
}

func (d *Datapath) CheckPod(_ context.Context, p datapath.Pod) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	got, ok := d.pods[p.Key]
	if !ok {
		return errors.New("pod not wired")
	}
	if len(got.IPs) != len(p.IPs) || (len(p.IPs) > 0 && got.IPs[0] != p.IPs[0]) {
		return errors.New("pod wired with other addresses")
	}
	return nil
}

func (d *Datapath) Pods(context.Context) ([]datapath.Pod, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]datapath.Pod, 0, len(d.pods))
	for _, p := range d.pods {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key.String() < out[j].Key.String() })
	return out, nil
}

func (d *Datapath) SetRemoteNodes(_ context.Context, n []datapath.RemoteNode) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.remotes = n
	return nil
}

// SetPeerRoutes records the routes. See datapath.NodeNetwork.
func (d *Datapath) SetPeerRoutes(_ context.Context, r datapath.PeerRoutes) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.peers = r
	return nil
}

// PeerRoutes returns the last peer routes set.
func (d *Datapath) PeerRoutes() datapath.PeerRoutes {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.peers
}

// Remotes returns the last remote nodes set.
func (d *Datapath) Remotes() []datapath.RemoteNode {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.remotes
}

func (d *Datapath) Capabilities() datapath.Capabilities {
	return datapath.Capabilities{Encapsulations: []string{"geneve", "vxlan", "none"}, Mode: "fake"}
}

func (d *Datapath) Close() error { return nil }

// Uninstall forgets everything and counts the call.
func (d *Datapath) Uninstall(context.Context, datapath.Node) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.pods, d.remotes, d.peers, d.policy = map[datapath.PodKey]datapath.Pod{}, nil, datapath.PeerRoutes{}, datapath.Policy{}
	d.Uninstalls++
	return nil
}

// SetPolicy records the policy.
func (d *Datapath) SetPolicy(_ context.Context, p datapath.Policy) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.policy = p
	return nil
}

// RuleCounts returns what SetRuleCounts set (the fake forwards nothing to count).
func (d *Datapath) RuleCounts(context.Context) ([]datapath.RuleCount, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.ruleCounts), nil
}

// SetRuleCounts sets what RuleCounts returns.
func (d *Datapath) SetRuleCounts(c []datapath.RuleCount) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ruleCounts = slices.Clone(c)
}

// Policy returns the last policy set.
func (d *Datapath) Policy() datapath.Policy {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.policy
}
