package agent

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"sort"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weft-net/weft/agent/datapath"
	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/health"
)

// peerRouting programs the routes to peer clusters: their ranges (Accepted ClusterPeers) through
// this cluster's active gateways. Gateways are probed directly (every 50 ms): a dead one
// leaves the routes in well under a second, from the last read of the cache, without
// waiting for its Lease to expire or for any API server.
type peerRouting struct {
	a          *agentState
	programmed *datapath.PeerRoutes
	read       *peerInputs // the last read of the ClusterNetwork and ClusterPeers
	probing    time.Time   // when the first candidate gateways were given to the prober
}

func (p *peerRouting) start(ctx context.Context, f *fabric) error {
	a := p.a
	gwChanged, inputsChanged := make(chan struct{}, 1), make(chan struct{}, 1)
	prober, err := a.gatewayProber(gwChanged)
	if err != nil {
		return err
	}
	f.spawn(func() {
		if err := prober.Run(ctx); err != nil {
			a.log.Error(err, "gateway health probes stopped")
		}
	})
	if err := f.watch(ctx, func() { poke(inputsChanged) }, &fabricv1.ClusterNetwork{}, &fabricv1.ClusterPeer{}); err != nil {
		return err
	}
	f.spawn(func() {
		// A failed read or write is retried a second later (the cache is local: this is
		// no request to the API server).
		var retry <-chan time.Time
		for {
			reread := false
			select {
			case <-ctx.Done():
				return
			case <-inputsChanged:
				reread = true
			case <-retry:
				reread = true
			case <-gwChanged:
			}
			retry = nil
			if ok, again := p.sync(ctx, f.datapath, f.in, prober, reread); !ok {
				retry = time.After(time.Second)
			} else if again > 0 {
				retry = time.After(again)
			}
		}
	})
	return nil
}

// firstProbeRound is how long a starting agent gives the gateways to answer its first probes
// (every 50 ms) before it takes one that has not for down: until then the datapath keeps
// the routes an earlier run left (an agent restart moves no traffic by itself).
const firstProbeRound = 300 * time.Millisecond

// gatewayProber probes this cluster's gateways (every 50 ms) from a socket of its own,
// poking changed when one starts or stops answering.
func (a *agentState) gatewayProber(changed chan struct{}) (*health.Prober, error) {
	conn, err := net.ListenPacket("udp4", ":0")
	if err != nil {
		return nil, fmt.Errorf("gateway health probes: %w", err)
	}
	return health.NewProber(conn, health.Options{OnChange: func(gw health.Target, up bool) {
		a.log.Info("gateway health", "gateway", gw, "up", up)
		poke(changed)
	}}), nil
}

// gatewayTargets are the gateways' health responders.
func gatewayTargets(gateways []netip.Addr) []health.Target {
	targets := make([]health.Target, 0, len(gateways))
	for _, g := range gateways {
		targets = append(targets, health.Target{Addr: netip.AddrPortFrom(g, health.DefaultPort)})
	}
	return targets
}

// sync programs the routes to peer clusters; reread says whether to read the cache first or
// to reuse the last read (on a health change). It says whether it succeeded, and when to
// look again if it waits for the first probes' answers.
func (p *peerRouting) sync(ctx context.Context, dp datapath.Datapath, in inputs, prober *health.Prober, reread bool) (bool, time.Duration) {
	log := p.a.log
	node := in.node
	if reread || p.read == nil {
		got, err := p.a.readPeerInputs(ctx)
		if err != nil {
			log.Error(err, "reading peer clusters and gateways")
			return false, 0
		}
		p.read = &got
	}
	candidates := PeerRoutes(node.Name, p.read.cn, p.read.peers, time.Now())
	if err := p.a.lastKnown.save(lastKnownRoutes{Backend: in.backend, Node: node, MaxActive: int(p.read.cn.Spec.Gateways.MaxActive),
		Routes: candidates}); err != nil {
		log.Error(err, "keeping the last known gateways")
	}
	want := p.read.routes(candidates, node.IP, prober)
	expected := len(candidates.Gateways)
	if maxActive := int(p.read.cn.Spec.Gateways.MaxActive); maxActive > 0 {
		expected = min(expected, maxActive)
	}
	if p.programmed == nil && len(want.Gateways) < expected {
		if p.probing.IsZero() {
			p.probing = time.Now()
		}
		if wait := firstProbeRound - time.Since(p.probing); wait > 0 {
			return true, wait
		}
	}
	if p.programmed != nil && reflect.DeepEqual(*p.programmed, want) {
		return true, 0
	}
	start := time.Now()
	if err := dp.SetPeerRoutes(ctx, want); err != nil {
		log.Error(err, "programming routes to peer clusters")
		return false, 0
	}
	log.Info("routes to peer clusters", "prefixes", want.Prefixes, "gateways", want.Gateways, "localGateway", want.LocalGateway,
		"took", time.Since(start).Round(time.Millisecond))
	p.programmed = &want
	return true, 0
}

// peerInputs are what routes to peer clusters are computed from.
type peerInputs struct {
	cn    *fabricv1.ClusterNetwork
	peers []fabricv1.ClusterPeer
}

func (a *agentState) readPeerInputs(ctx context.Context) (peerInputs, error) {
	// A cache's first read of a kind waits for its watch to sync: never longer than this
	// (the loop that calls it also fails over).
	ctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	cn := &fabricv1.ClusterNetwork{}
	if err := a.reader().Get(ctx, client.ObjectKey{Name: fabricv1.ClusterNetworkName}, cn); err != nil {
		return peerInputs{}, err
	}
	peers := &fabricv1.ClusterPeerList{}
	if err := a.reader().List(ctx, peers); err != nil {
		return peerInputs{}, err
	}
	return peerInputs{cn: cn, peers: peers.Items}, nil
}

// routes are the ranges of the connected peer clusters and this cluster's active gateway
// nodes (their endpoint addresses are their node addresses) among the candidates r:
// answering the prober, at most maxActive.
func (p peerInputs) routes(r datapath.PeerRoutes, nodeIP netip.Addr, prober *health.Prober) datapath.PeerRoutes {
	prober.SetTargets(gatewayTargets(r.Gateways))
	up := prober.Answering()
	return ActivePeerRoutes(r, nodeIP, int(p.cn.Spec.Gateways.MaxActive), func(g netip.Addr) bool { return up[g] })
}

// PeerRoutes computes what the datapath needs to reach peer clusters: their pod and service
// ranges (Accepted peers only) and this cluster's candidate gateways at now (GatewayStatus.Probed:
// a Lease renewed late is not a failure, the prober decides), sorted.
func PeerRoutes(node string, cn *fabricv1.ClusterNetwork, peers []fabricv1.ClusterPeer, now time.Time) datapath.PeerRoutes {
	var r datapath.PeerRoutes
	for i := range cn.Status.Gateways {
		gw := &cn.Status.Gateways[i]
		if !gw.Probed(now) {
			continue
		}
		if gw.Node == node {
			r.LocalGateway = true
		}
		if ep, err := netip.ParseAddrPort(gw.Endpoint); err == nil {
			r.Gateways = append(r.Gateways, ep.Addr())
		}
	}
	for _, p := range peers {
		if !p.Status.InForce() {
			continue
		}
		r.Prefixes = append(r.Prefixes, p.Status.Prefixes()...)
	}
	sort.Slice(r.Gateways, func(i, j int) bool { return r.Gateways[i].Less(r.Gateways[j]) })
	sort.Slice(r.Prefixes, func(i, j int) bool { return r.Prefixes[i].String() < r.Prefixes[j].String() })
	return r
}

// ActivePeerRoutes narrows the gateways (sorted by address) to the active ones: the first
// maxActive (0: no cap) that answer. Flows are spread across them (active-active); each
// gateway reaches every gateway of the peer clusters, so no pairing is needed. This node
// hands peer traffic to its own kernel only while it is one of the active gateways; a
// standby gateway node sends its traffic to the active ones like any other node.
func ActivePeerRoutes(r datapath.PeerRoutes, nodeIP netip.Addr, maxActive int, answers func(netip.Addr) bool) datapath.PeerRoutes {
	var active []netip.Addr
	local := false
	for _, g := range r.Gateways {
		if maxActive > 0 && len(active) == maxActive {
			break
		}
		if answers(g) {
			active = append(active, g)
			local = local || g == nodeIP
		}
	}
	r.Gateways = active
	r.LocalGateway = local
	return r
}
