// Package datapath is the seam between the weft agent and the code that programs a node's
// forwarding: one interface, driver-neutral types, and a registry of drivers (ovs and
// ebpf). It says what a driver must do, not how; drivers live in sub-packages.
package datapath

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/weft-net/weft/agent/policy"
	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// Datapath programs one node. The agent calls Init once per start, before anything else;
// after that PodNetwork and NodeNetwork methods may be called concurrently (drivers
// serialize internally). Every method is idempotent: repeating a call with the same input
// changes nothing, and existing forwarding is never interrupted by a repeated Init.
type Datapath interface {
	// Init prepares the node: bridges or programs, the tunnel, the gateway interface with
	// node's pod-block gateway addresses. Pods and remote nodes already programmed by an
	// earlier run stay in place.
	Init(ctx context.Context, node Node) error
	PodNetwork
	NodeNetwork
	PolicyNetwork
	// Capabilities says what this driver can do on this machine.
	Capabilities() Capabilities
	// Uninstall removes from the node everything the driver made — programs or bridges,
	// devices, routes, addresses, the pods' host interfaces, saved state — when weft is
	// uninstalled; the node's pods lose their network. It needs no Init first (it finds
	// an earlier run's work on the node), does nothing on a clean node, and leaves the
	// driver unusable but for Close. node names the node (its name and pod blocks).
	Uninstall(ctx context.Context, node Node) error
	// Close releases connections; it leaves the datapath programmed.
	Close() error
}

// PodNetwork wires pods.
type PodNetwork interface {
	// AddPod creates the pod's interface in its network namespace with its addresses and
	// routes, and the forwarding to and from it. All-or-nothing: on error nothing of the pod
	// remains. Adding a pod that exists with the same spec returns its result unchanged.
	AddPod(ctx context.Context, pod Pod) (PodResult, error)
	// DelPod removes everything AddPod made. A pod that does not exist is no error.
	DelPod(ctx context.Context, key PodKey) error
	// CheckPod reports whether the pod is wired as specified.
	CheckPod(ctx context.Context, pod Pod) error
	// Pods lists the pods the datapath holds, with what they were added with.
	Pods(ctx context.Context) ([]Pod, error)
}

// NodeNetwork reaches the other nodes of the cluster.
type NodeNetwork interface {
	// SetRemoteNodes makes the datapath forward to exactly these nodes' pod blocks: nodes
	// missing from the list are forgotten.
	SetRemoteNodes(ctx context.Context, nodes []RemoteNode) error
	// SetPeerRoutes sends traffic for other clusters' ranges towards this cluster's gateways,
	// replacing what an earlier call set.
	SetPeerRoutes(ctx context.Context, routes PeerRoutes) error
}

// PolicyNetwork enforces network policy.
type PolicyNetwork interface {
	// SetPolicy replaces the enforced policy in one step. New connections are decided by
	// the new policy; connections that were allowed and established keep going. The policy
	// survives restarts of the agent: Init enforces the last one set until the next call.
	SetPolicy(ctx context.Context, p Policy) error
	// RuleCounts reads what each enforced rule decided (RuleCount), from the datapath's
	// own counters — no packet goes to the agent to be counted —, read when asked.
	RuleCounts(ctx context.Context) ([]RuleCount, error)
}

// ErrPolicyUnsupported is SetPolicy's error from a driver that cannot enforce the policy it
// was given (it enforces none of it; the node does not report it realized).
var ErrPolicyUnsupported = errors.New("this datapath does not enforce network policy")

// Policy is what SetPolicy enforces.
type Policy struct {
	// Pipeline is the compiled policy of the node's pods (nil: none).
	Pipeline *policy.Pipeline
	// ServiceCIDRs are decided after the node's kernel has translated them to pod addresses
	// (kube-proxy), not on the way there.
	ServiceCIDRs []netip.Prefix
	// DNSPods are the node's pods whose DNS answers the datapath hands to
	// Options.OnDNSAnswer before delivering them: pods with FQDN rules.
	DNSPods []netip.Addr
	// DNSServers are the resolvers trusted to answer them. Only an answer from one of them
	// to a query the pod sent it (UDP from port 53, the reply of a tracked query) is held
	// and handed over; any other packet from port 53 is policed like the rest.
	DNSServers []netip.Addr
}

// DNSAnswer is what a DNS answer to a pod said: addresses by name (every name of a CNAME
// chain gets the chain's addresses).
type DNSAnswer struct {
	Pod     netip.Addr
	Records []DNSRecord
}

// DNSRecord is one name's address and how long it may be used.
type DNSRecord struct {
	Name string // lower case, no trailing dot
	Addr netip.Addr
	TTL  time.Duration
}

// PolicyEvent is a connection a logged or rejecting rule matched.
type PolicyEvent struct {
	Rule             RuleInfo
	Src, Dst         netip.Addr
	Protocol         string
	SrcPort, DstPort int
}

// RuleInfo names the source of a compiled rule.
type RuleInfo struct {
	Tier      string                `json:"tier,omitempty"`
	Policy    string                `json:"policy"`
	Rule      string                `json:"rule,omitempty"`
	Action    fabricv1.PolicyAction `json:"action"`
	Direction string                `json:"direction"`
}

func (e PolicyEvent) String() string {
	tier := e.Rule.Tier
	if tier == "" {
		tier = "networkpolicy"
	}
	return fmt.Sprintf("%s %s %s/%s %s %s:%d -> %s:%d %s", e.Rule.Action, e.Rule.Direction, tier, e.Rule.Policy, e.Rule.Rule,
		e.Src, e.SrcPort, e.Dst, e.DstPort, e.Protocol)
}

// PeerRoutes are the other clusters' ranges and the gateway nodes that carry them.
type PeerRoutes struct {
	// Prefixes are the peer clusters' pod and service ranges.
	Prefixes []netip.Prefix
	// Gateways are this cluster's healthy gateway nodes (underlay addresses). A node that is
	// not one of them hashes each connection (symmetric 5-tuple) onto one of them through the
	// overlay; with none, peer traffic is dropped at the source.
	Gateways []netip.Addr
	// LocalGateway says this node is a gateway: its own peer traffic, and peer traffic that
	// other nodes tunnel to it, goes to the node's kernel, which routes it into the tunnel to
	// the peers.
	LocalGateway bool
}

// Node is the node the datapath runs on.
type Node struct {
	Name string
	// IP is the node's underlay address (its InternalIP); tunnels start and end there.
	IP netip.Addr
	// PodCIDRs are this node's pod blocks (one per IP family).
	PodCIDRs []netip.Prefix
	// Encapsulation between nodes: geneve, vxlan or none.
	Encapsulation string
	// MTU of pod interfaces; 0 derives it from the uplink (PodMTU).
	MTU int
}

// PodMTU is pods' MTU on a node whose uplink has uplinkMTU: room for the cluster's
// encapsulation between nodes (overhead bytes; 0 without) or for the largest tunnel between
// clusters (fabricv1.MaxTunnelOverhead), whichever is larger. A pod's packet then crosses any
// path whole — the first one too, where a larger MTU lost it to path MTU discovery at the
// gateway's tunnel.
func PodMTU(uplinkMTU, overhead int) int {
	return uplinkMTU - max(overhead, fabricv1.MaxTunnelOverhead)
}

// Gateway is the node's address in a pod block: its first host address. Pods route through it.
func Gateway(block netip.Prefix) netip.Addr { return block.Masked().Addr().Next() }

// PodKey identifies a pod attachment the way CNI does.
type PodKey struct {
	ContainerID string
	IfName      string
}

func (k PodKey) String() string { return k.ContainerID + "/" + k.IfName }

// Pod is a pod attachment to wire.
type Pod struct {
	Key                  PodKey
	Namespace, Name, UID string
	// Netns is the path of the pod's network namespace.
	Netns string
	// IPs are the pod's addresses with their block's prefix length.
	IPs []netip.Prefix
}

// PodResult is what AddPod made, for the CNI result.
type PodResult struct {
	HostInterface string
	Interface     string
	MAC           string
	MTU           int
	IPs           []netip.Prefix
	Gateways      []netip.Addr
}

// RemoteNode is another node of the cluster.
type RemoteNode struct {
	Name     string
	IP       netip.Addr
	PodCIDRs []netip.Prefix
}

// Capabilities describe a driver on this machine.
type Capabilities struct {
	// Encapsulations the driver supports here.
	Encapsulations []string
	// Mode is a short description of how it runs here, such as "ovs/netdev".
	Mode string
}

// Supports reports whether an encapsulation is supported.
func (c Capabilities) Supports(encap string) bool {
	for _, e := range c.Encapsulations {
		if e == encap {
			return true
		}
	}
	return false
}

// Factory builds a driver.
type Factory func(Options) (Datapath, error)

// Options are what any driver may need from the agent.
type Options struct {
	// StateDir is the agent's state directory on the node.
	StateDir string
	// OVSDB is the Open vSwitch database socket (ovs driver).
	OVSDB string
	// OVSRunDir is where Open vSwitch keeps its sockets (ovs driver).
	OVSRunDir string
	// BPFFS is where bpffs is (or is mounted) for pinned programs and maps (ebpf driver;
	// default /sys/fs/bpf).
	BPFFS string
	// EBPFAttach is how the ebpf driver attaches its programs: "tcx", or "tc" (a clsact
	// qdisc's filters, for kernels before 6.6); empty: TCX where the kernel has it, else tc.
	EBPFAttach string
	// OnPolicyEvent is called for each new connection a logged rule matches and each one a
	// Reject rule answers (nil: not reported).
	OnPolicyEvent func(PolicyEvent)
	// OnDNSAnswer is called with each DNS answer a Policy.DNSServers resolver gives a
	// Policy.DNSPods pod's query; the answer is held until it returns: a policy updated by
	// then applies to the pod's next connection.
	OnDNSAnswer func(DNSAnswer)
}

// Registry maps driver names to factories. It is a value, not a global: the agent builds one.
type Registry struct {
	factories map[string]Factory
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{factories: map[string]Factory{}} }

// Register adds a driver; a name can be registered once.
func (r *Registry) Register(name string, f Factory) error {
	if _, dup := r.factories[name]; dup {
		return fmt.Errorf("datapath driver %q is already registered", name)
	}
	r.factories[name] = f
	return nil
}

// New builds the named driver; an unknown name is an error that lists the known ones.
func (r *Registry) New(name string, opts Options) (Datapath, error) {
	f, ok := r.factories[name]
	if !ok {
		return nil, fmt.Errorf("unknown datapath driver %q (known: %s)", name, strings.Join(r.Names(), ", "))
	}
	return f(opts)
}

// Names lists the registered drivers.
func (r *Registry) Names() []string {
	names := make([]string, 0, len(r.factories))
	for n := range r.factories {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
