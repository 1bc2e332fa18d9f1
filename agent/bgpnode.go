package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/weft-net/weft/agent/bgp"
	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/podblocks"
)

// bgpNode runs the node's BGP speaker from the ClusterNetwork's spec.bgp and reports it in
// the node's BGPNode.
type bgpNode struct {
	a       *agentState
	speaker *bgp.Speaker
	running bool
	// restarting: a speaker ran on this node before this agent (graceful restart).
	restarting bool
	applied    *bgp.Config
	applyErr   string
	reported   *fabricv1.BGPNodeStatus
	cleared    bool // no BGPNode of this node is left
	imported   bgp.KernelRoutes
	metrics    *bgp.Metrics
	followed   *followed // what refresh follows: the last sync that configured the speaker
	passwords  *passwords
}

type followed struct {
	cn     *fabricv1.ClusterNetwork
	cfg    bgp.Config
	filter bgp.ImportFilter
}

// speakerMark is the file that says a speaker ran on this node.
const speakerMark = "bgp-speaker"

func newBGPNode(a *agentState, m *bgp.Metrics) *bgpNode {
	_, err := os.Stat(filepath.Join(a.cfg.StateDir, speakerMark))
	return &bgpNode{a: a, speaker: bgp.New(nil), restarting: err == nil, metrics: m}
}

// sync makes the speaker follow the ClusterNetwork, the node and the cluster's Services;
// called when one of them changes.
func (b *bgpNode) sync(ctx context.Context, cn *fabricv1.ClusterNetwork, nodes func(labels.Selector) ([]*corev1.Node, error)) {
	log := b.a.log.WithName("bgp")
	spec := cn.Spec.BGP
	b.followed = nil
	b.passwords.follow(ctx, spec)
	if spec == nil {
		b.off(ctx, "spec.bgp is not set")
		return
	}
	all, err := nodes(labels.Everything())
	if err != nil {
		log.Error(err, "listing nodes")
		return
	}
	var self *corev1.Node
	ips := map[string]netip.Addr{}
	for _, n := range all {
		ips[n.Name] = internalIP(n)
		if n.Name == b.a.cfg.NodeName {
			self = n
		}
	}
	if self == nil {
		// The node is being removed: take its routes back now rather than leave them to
		// the peers' graceful-restart timers.
		if b.running && b.applied != nil {
			if err := b.speaker.Withdraw(); err != nil {
				log.Error(err, "withdrawing the routes of a node that is gone")
			}
			b.applied = nil // announced again should the node come back
		}
		return
	}
	// The blocks the node's FabricNode gives it now (none while it has none: withdrawn).
	var blocks []netip.Prefix
	fn := &fabricv1.FabricNode{}
	if err := b.a.reader().Get(ctx, client.ObjectKey{Name: self.Name}, fn); err == nil {
		blocks, _ = podblocks.Of(cn).Own(fn.Spec.PodCIDRs)
	}
	in := bgp.Inputs{Spec: spec, Node: self, NodeIP: ips[self.Name], Blocks: blocks, Nodes: all, NodeIPs: ips,
		Restarting: b.restarting, Password: b.passwords.password}
	for _, c := range cn.Spec.ServiceCIDRs {
		if p, err := netip.ParsePrefix(string(c)); err == nil {
			in.ServiceCIDRs = append(in.ServiceCIDRs, p)
		}
	}
	if spec.Advertise.ServiceImportVIPs {
		in.ServiceImportVIPs = b.importVIPs(ctx)
	}
	if spec.Advertise.LoadBalancerIPs {
		in.LoadBalancerIPs = b.loadBalancerIPs(ctx)
	}
	cfg, err := bgp.Desired(in)
	if errors.Is(err, bgp.ErrNotSelected) {
		b.off(ctx, "")
		return
	}
	if err != nil {
		b.applyErr = err.Error()
		b.report(ctx, cn, nil, cfg)
		return
	}
	if b.applied == nil || !reflect.DeepEqual(*b.applied, cfg) {
		start := time.Now()
		if err := b.speaker.Apply(ctx, cfg); err != nil {
			b.applyErr = err.Error()
			log.Error(err, "configuring the BGP speaker")
		} else {
			b.applyErr = ""
			b.applied = &cfg
			b.restarting = false // the restart flag goes with the first configuration only
			log.Info("BGP speaker configured", "asn", cfg.ASN, "routerID", cfg.RouterID, "peers", len(cfg.Peers),
				"prefixes", cfg.Prefixes, "took", time.Since(start).Round(time.Millisecond))
		}
		if !b.running {
			b.running = true
			_ = os.WriteFile(filepath.Join(b.a.cfg.StateDir, speakerMark), nil, 0o600)
		}
	}
	b.follow(ctx, cn, cfg, importFilter(cn, in, cfg))
}

// importFilter is what the node imports of the routes its peers announce.
func importFilter(cn *fabricv1.ClusterNetwork, in bgp.Inputs, cfg bgp.Config) bgp.ImportFilter {
	f := bgp.ImportFilter{Services: in.ServiceCIDRs, MaxPrefixes: map[netip.Addr]int{},
		Own: fabricv1.CIDRPrefixes(cn.Spec.PodCIDRs...), Allow: fabricv1.CIDRPrefixes(cn.Spec.BGP.ImportAllow...)}
	for _, ip := range in.NodeIPs {
		if ip.IsValid() {
			f.Nodes = append(f.Nodes, ip)
		}
	}
	for _, p := range cfg.Peers {
		f.MaxPrefixes[p.Address] = p.MaxPrefixes
	}
	return f
}

// follow installs the routes BGP peers announce (spec.bgp.import) and reports the speaker's
// sessions; sync calls it, and refresh between syncs.
func (b *bgpNode) follow(ctx context.Context, cn *fabricv1.ClusterNetwork, cfg bgp.Config, filter bgp.ImportFilter) {
	b.followed = &followed{cn: cn, cfg: cfg, filter: filter}
	log := b.a.log.WithName("bgp")
	var refused map[netip.Addr]string
	if cn.Spec.BGP.Import {
		received, err := b.speaker.Received()
		if err == nil {
			var kept []bgp.Route
			kept, refused = filter.Filter(received)
			err = b.imported.Sync(kept, nil) // (filtered)
		}
		if err != nil {
			log.Error(err, "installing the routes BGP peers announced")
		}
	} else if err := b.imported.Sync(nil, nil); err != nil {
		log.Error(err, "removing imported BGP routes")
	}
	peers, err := b.speaker.Status(ctx)
	if err != nil {
		log.Error(err, "reading the BGP sessions")
	}
	for i := range peers {
		peers[i].ImportRefused = refused[peers[i].Address]
	}
	b.report(ctx, cn, peers, cfg)
}

// refresh follows the running speaker's sessions and received routes between syncs (the
// speaker is local: no request to the API server unless the status changed).
func (b *bgpNode) refresh(ctx context.Context) {
	if b.running && b.applied != nil && b.followed != nil {
		b.follow(ctx, b.followed.cn, b.followed.cfg, b.followed.filter)
	}
}

// off stops the speaker politely (peers withdraw the routes at once) and removes the
// node's BGPNode.
func (b *bgpNode) off(ctx context.Context, why string) {
	if b.running {
		b.speaker.Stop(true)
		b.running, b.applied = false, nil
		_ = os.Remove(filepath.Join(b.a.cfg.StateDir, speakerMark))
		b.a.log.Info("BGP speaker stopped", "why", why)
	}
	_ = b.imported.Sync(nil, nil)
	b.metrics.Set(nil)
	// Once per stop (and once after the agent starts: an earlier agent's may be left).
	if b.reported != nil || !b.cleared {
		err := b.a.c.Delete(ctx, &fabricv1.BGPNode{ObjectMeta: metav1.ObjectMeta{Name: b.a.cfg.NodeName}})
		if err == nil || apierrors.IsNotFound(err) {
			b.reported, b.cleared = nil, true
		}
	}
}

func (b *bgpNode) importVIPs(ctx context.Context) []netip.Addr {
	list := &mcsv1.ServiceImportList{}
	ctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	if err := b.a.reader().List(ctx, list); err != nil {
		b.a.log.Error(err, "listing ServiceImports for BGP")
		return nil
	}
	var out []netip.Addr
	for _, si := range list.Items {
		for _, s := range si.Spec.IPs {
			if a, err := netip.ParseAddr(s); err == nil {
				out = append(out, a)
			}
		}
	}
	return out
}

func (b *bgpNode) loadBalancerIPs(ctx context.Context) []netip.Addr {
	list := &corev1.ServiceList{}
	ctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	if err := b.a.reader().List(ctx, list); err != nil {
		b.a.log.Error(err, "listing Services for BGP")
		return nil
	}
	var out []netip.Addr
	for _, s := range list.Items {
		if s.Spec.Type != corev1.ServiceTypeLoadBalancer {
			continue
		}
		for _, ing := range s.Status.LoadBalancer.Ingress {
			if a, err := netip.ParseAddr(ing.IP); err == nil {
				out = append(out, a)
			}
		}
	}
	return out
}

// report writes the node's BGPNode status when it changed.
func (b *bgpNode) report(ctx context.Context, cn *fabricv1.ClusterNetwork, peers []bgp.PeerStatus, cfg bgp.Config) {
	b.metrics.Set(peers)
	st := fabricv1.BGPNodeStatus{ObservedGeneration: cn.Generation, ASN: int64(cfg.ASN)}
	if cfg.RouterID.IsValid() {
		st.RouterID = cfg.RouterID.String()
	}
	if b.applied != nil {
		for _, p := range b.applied.Prefixes {
			st.Advertised = append(st.Advertised, p.String())
		}
	}
	down := 0
	for _, p := range peers {
		ps := fabricv1.BGPPeerStatus{Name: p.Name, Address: p.Address.String(), ASN: int64(p.ASN),
			State: fabricv1.BGPSessionState(p.State), BFD: p.BFD, PrefixesSent: int64(p.PrefixesSent),
			PrefixesReceived: int64(p.PrefixesReceived), LastError: p.LastError, ImportRefused: p.ImportRefused}
		if !p.Since.IsZero() {
			t := metav1.NewTime(p.Since.Truncate(time.Second))
			ps.Since = &t
		}
		if p.State != "Established" {
			down++
		}
		st.Peers = append(st.Peers, ps)
	}
	old := []metav1.Condition{}
	if b.reported != nil {
		old = b.reported.Conditions
	}
	st.Conditions = append(st.Conditions, old...)
	switch {
	case b.applyErr != "":
		setCond(&st, cn.Generation, fabricv1.ConditionReady, metav1.ConditionFalse, fabricv1.ReasonSpeakerFailed, b.applyErr)
		setCond(&st, cn.Generation, fabricv1.ConditionStalled, metav1.ConditionTrue, fabricv1.ReasonSpeakerFailed, b.applyErr)
	case down > 0:
		setCond(&st, cn.Generation, fabricv1.ConditionReady, metav1.ConditionFalse, fabricv1.ReasonPeersNotEstablished,
			fmt.Sprintf("%d of %d BGP sessions are not Established", down, len(peers)))
		meta.RemoveStatusCondition(&st.Conditions, fabricv1.ConditionStalled)
	default:
		setCond(&st, cn.Generation, fabricv1.ConditionReady, metav1.ConditionTrue, fabricv1.ReasonReconciled,
			fmt.Sprintf("%d BGP sessions Established", len(peers)))
		meta.RemoveStatusCondition(&st.Conditions, fabricv1.ConditionStalled)
	}
	if b.reported != nil && reflect.DeepEqual(*b.reported, st) {
		return
	}
	if err := b.writeStatus(ctx, st); err != nil {
		b.a.log.Error(err, "writing the node's BGPNode status")
		return
	}
	b.reported, b.cleared = &st, false
}

func setCond(st *fabricv1.BGPNodeStatus, gen int64, typ string, status metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen})
}

func (b *bgpNode) writeStatus(ctx context.Context, st fabricv1.BGPNodeStatus) error {
	obj := &fabricv1.BGPNode{}
	err := b.a.c.Get(ctx, client.ObjectKey{Name: b.a.cfg.NodeName}, obj)
	if apierrors.IsNotFound(err) {
		obj = &fabricv1.BGPNode{ObjectMeta: metav1.ObjectMeta{Name: b.a.cfg.NodeName}}
		// It goes with its node.
		if n, err := b.a.cs.CoreV1().Nodes().Get(ctx, b.a.cfg.NodeName, metav1.GetOptions{}); err == nil {
			obj.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: n.Name, UID: n.UID}}
		}
		if err := b.a.c.Create(ctx, obj); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	obj.Status = st
	return b.a.c.Status().Update(ctx, obj)
}

// stopForRestart leaves the sessions to the peers' graceful restart: the agent is going,
// another will come.
func (b *bgpNode) stopForRestart() {
	if b.running {
		b.speaker.Stop(false)
		klog.Background().Info("BGP speaker left for the next agent (graceful restart)")
	}
}

// bgpSpeaker is the BGP subsystem: it runs the node's speaker (bgpNode) from the shared
// cache — the ClusterNetwork, nodes and their FabricNodes, and the Services or
// ServiceImports it advertises — and follows its sessions every second.
type bgpSpeaker struct {
	node     *bgpNode
	withdraw chan chan struct{}
}

func (s *bgpSpeaker) start(ctx context.Context, f *fabric) error {
	a := s.node.a
	s.withdraw = make(chan chan struct{})
	changed := make(chan struct{}, 1)
	wake := func() { poke(changed) }
	s.node.passwords = newPasswords(a.cs, a.cfg.Namespace, wake)
	if err := f.watch(ctx, wake, &corev1.Node{}, &fabricv1.FabricNode{}, &fabricv1.ClusterNetwork{}); err != nil {
		return err
	}
	f.onStop(s.node.stopForRestart)
	f.spawn(func() {
		status := time.NewTicker(time.Second)
		defer status.Stop()
		watched := map[string]bool{} // the kinds only advertising needs, watched once needed
		withdrawn := false
		var last *fabricv1.ClusterNetwork
		for {
			select {
			case <-ctx.Done():
				return
			case done := <-s.withdraw:
				// Polite: the BGP peers withdraw the node's routes at once.
				s.node.off(ctx, "weft is being uninstalled")
				withdrawn = true
				close(done)
			case <-status.C:
				switch {
				case withdrawn:
				case s.node.applyErr != "" && last != nil:
					// A failed configuration is retried (from caches: a password Secret
					// that comes later wakes the loop through its watch anyway).
					s.node.sync(ctx, last, a.listNodes)
				default:
					s.node.refresh(ctx)
				}
			case <-changed:
				if withdrawn {
					continue
				}
				cn := &fabricv1.ClusterNetwork{}
				if err := f.cache.Get(ctx, client.ObjectKey{Name: fabricv1.ClusterNetworkName}, cn); err != nil {
					a.log.Error(err, "reading the ClusterNetwork for BGP")
					continue
				}
				if spec := cn.Spec.BGP; spec != nil {
					for kind, obj := range map[string]client.Object{"imports": &mcsv1.ServiceImport{}, "services": &corev1.Service{}} {
						need := (kind == "imports" && spec.Advertise.ServiceImportVIPs) || (kind == "services" && spec.Advertise.LoadBalancerIPs)
						if need && !watched[kind] {
							if err := f.watch(ctx, wake, obj); err != nil {
								a.log.Error(err, "watching for BGP", "kind", kind)
								continue
							}
							watched[kind] = true
						}
					}
				}
				last = cn
				s.node.sync(ctx, cn, a.listNodes)
			}
		}
	})
	return nil
}

// withdrawAll stops the speaker politely, waiting (at most 10 s) until it did.
func (s *bgpSpeaker) withdrawAll(ctx context.Context) {
	done := make(chan struct{})
	select {
	case s.withdraw <- done:
	case <-ctx.Done():
		return
	case <-time.After(10 * time.Second):
		return
	}
	select {
	case <-done:
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
	}
}
