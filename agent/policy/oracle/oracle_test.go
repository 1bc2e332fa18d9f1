package oracle

import (
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// The test world: namespaces prod and dev, a web and a db pod in prod, a client in dev.
var (
	web    = Pod{Namespace: "prod", Name: "web", Labels: map[string]string{"app": "web"}, IP: netip.MustParseAddr("10.0.0.1"), Ports: []NamedPort{{"http", corev1.ProtocolTCP, 8080}}}
	db     = Pod{Namespace: "prod", Name: "db", Labels: map[string]string{"app": "db"}, IP: netip.MustParseAddr("10.0.0.2")}
	client = Pod{Namespace: "dev", Name: "client", Labels: map[string]string{"app": "client"}, IP: netip.MustParseAddr("10.0.1.1")}
	remote = netip.MustParseAddr("192.0.2.10") // an address outside the cluster
)

func tier(name string, prio int32) fabricv1.Tier {
	return fabricv1.Tier{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: fabricv1.TierSpec{Priority: prio}}
}

// builtinTiers are the operator's.
var builtinTiers = []fabricv1.Tier{tier("emergency", 50), tier("securityops", 100), tier("networkops", 150),
	tier("platform", 200), tier("application", 250), tier("baseline", 253)}

func sel(kv ...string) *metav1.LabelSelector {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return &metav1.LabelSelector{MatchLabels: m}
}

func policy(name, tierName string, prio int32, appliedTo *metav1.LabelSelector, ingress, egress []fabricv1.PolicyRule) fabricv1.FabricPolicy {
	return fabricv1.FabricPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: fabricv1.FabricPolicySpec{
		Tier: tierName, Priority: prio, AppliedTo: []fabricv1.PolicyTarget{{PodSelector: appliedTo}}, Ingress: ingress, Egress: egress}}
}

func rule(name string, a fabricv1.PolicyAction, peers []fabricv1.PolicyPeer, ports ...fabricv1.PolicyPort) fabricv1.PolicyRule {
	return fabricv1.PolicyRule{Name: name, Action: a, From: peers, Ports: ports}
}

func egressRule(name string, a fabricv1.PolicyAction, peers []fabricv1.PolicyPeer, ports ...fabricv1.PolicyPort) fabricv1.PolicyRule {
	return fabricv1.PolicyRule{Name: name, Action: a, To: peers, Ports: ports}
}

func pods(s *metav1.LabelSelector) []fabricv1.PolicyPeer {
	return []fabricv1.PolicyPeer{{PodSelector: s}}
}

func tcp(port int32) fabricv1.PolicyPort {
	return fabricv1.PolicyPort{Protocol: corev1.ProtocolTCP, Port: ptr.To(intstr.FromInt32(port))}
}

func netpol(ns, name string, podSel metav1.LabelSelector, types []networkingv1.PolicyType, ingress []networkingv1.NetworkPolicyIngressRule, egress []networkingv1.NetworkPolicyEgressRule) networkingv1.NetworkPolicy {
	return networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: podSel, PolicyTypes: types, Ingress: ingress, Egress: egress}}
}

func world(pols []fabricv1.FabricPolicy, nps ...networkingv1.NetworkPolicy) *World {
	return &World{
		Tiers: builtinTiers, Policies: pols, NetworkPolicies: nps,
		Namespaces: map[string]map[string]string{"prod": {"env": "prod"}, "dev": {"env": "dev"}},
		Pods:       []Pod{web, db, client},
		// What client was told; web asked for nothing.
		Resolved: map[netip.Addr]map[string][]netip.Addr{client.IP: {"api.example.com": {netip.MustParseAddr("192.0.2.20")}, "example.com": {netip.MustParseAddr("192.0.2.30")}}},
		Clusters: map[string][]netip.Prefix{"west": {netip.MustParsePrefix("10.245.0.0/16")}},
	}
}

func conn(src, dst netip.Addr, port int32) Conn {
	return Conn{Src: src, Dst: dst, Protocol: corev1.ProtocolTCP, Port: port}
}

type want struct {
	action fabricv1.PolicyAction
	layer  Layer
	policy string
	rule   string
}

func TestEvaluate(t *testing.T) {
	webSel := sel("app", "web")
	clientSel := sel("app", "client")
	cases := []struct {
		name string
		w    *World
		c    Conn
		want want
	}{
		{"no policy: allowed by default", world(nil), conn(client.IP, web.IP, 80), want{fabricv1.ActionAllow, LayerDefault, "", ""}},
		{"Drop", world([]fabricv1.FabricPolicy{policy("deny-client", "application", 10, webSel,
			[]fabricv1.PolicyRule{rule("no-client", fabricv1.ActionDrop, pods(clientSel))}, nil)}),
			conn(client.IP, web.IP, 80), want{fabricv1.ActionDrop, LayerFabricPolicy, "deny-client", "no-client"}},
		{"Reject", world([]fabricv1.FabricPolicy{policy("rej", "application", 10, webSel,
			[]fabricv1.PolicyRule{rule("r", fabricv1.ActionReject, nil)}, nil)}),
			conn(client.IP, web.IP, 80), want{fabricv1.ActionReject, LayerFabricPolicy, "rej", "r"}},
		{"a rule on other pods does not apply", world([]fabricv1.FabricPolicy{policy("db-only", "application", 10, sel("app", "db"),
			[]fabricv1.PolicyRule{rule("r", fabricv1.ActionDrop, nil)}, nil)}),
			conn(client.IP, web.IP, 80), want{fabricv1.ActionAllow, LayerDefault, "", ""}},
		{"an earlier tier wins over a later one", world([]fabricv1.FabricPolicy{
			policy("app-drop", "application", 1, webSel, []fabricv1.PolicyRule{rule("d", fabricv1.ActionDrop, nil)}, nil),
			policy("sec-allow", "securityops", 99, webSel, []fabricv1.PolicyRule{rule("a", fabricv1.ActionAllow, nil)}, nil)}),
			conn(client.IP, web.IP, 80), want{fabricv1.ActionAllow, LayerFabricPolicy, "sec-allow", "a"}},
		{"in a tier, the lower priority wins", world([]fabricv1.FabricPolicy{
			policy("p20", "application", 20, webSel, []fabricv1.PolicyRule{rule("a", fabricv1.ActionAllow, nil)}, nil),
			policy("p10", "application", 10, webSel, []fabricv1.PolicyRule{rule("d", fabricv1.ActionDrop, nil)}, nil)}),
			conn(client.IP, web.IP, 80), want{fabricv1.ActionDrop, LayerFabricPolicy, "p10", "d"}},
		{"equal priorities: by name", world([]fabricv1.FabricPolicy{
			policy("b", "application", 10, webSel, []fabricv1.PolicyRule{rule("a", fabricv1.ActionAllow, nil)}, nil),
			policy("a", "application", 10, webSel, []fabricv1.PolicyRule{rule("d", fabricv1.ActionDrop, nil)}, nil)}),
			conn(client.IP, web.IP, 80), want{fabricv1.ActionDrop, LayerFabricPolicy, "a", "d"}},
		{"in a policy, the first matching rule wins", world([]fabricv1.FabricPolicy{policy("p", "application", 10, webSel,
			[]fabricv1.PolicyRule{rule("port-443", fabricv1.ActionDrop, nil, tcp(443)), rule("all", fabricv1.ActionAllow, nil), rule("never", fabricv1.ActionDrop, nil)}, nil)}),
			conn(client.IP, web.IP, 80), want{fabricv1.ActionAllow, LayerFabricPolicy, "p", "all"}},
		{"unnamed rules are named by direction and index", world([]fabricv1.FabricPolicy{policy("p", "application", 10, webSel,
			[]fabricv1.PolicyRule{{Action: fabricv1.ActionDrop, Ports: []fabricv1.PolicyPort{tcp(443)}}, {Action: fabricv1.ActionDrop}}, nil)}),
			conn(client.IP, web.IP, 80), want{fabricv1.ActionDrop, LayerFabricPolicy, "p", "ingress-1"}},
		{"Pass skips the rest of the tier: the next tier decides", world([]fabricv1.FabricPolicy{
			policy("pass", "securityops", 1, webSel, []fabricv1.PolicyRule{rule("pass", fabricv1.ActionPass, nil)}, nil),
			policy("drop-same-tier", "securityops", 2, webSel, []fabricv1.PolicyRule{rule("d", fabricv1.ActionDrop, nil)}, nil),
			policy("allow-next-tier", "platform", 50, webSel, []fabricv1.PolicyRule{rule("a", fabricv1.ActionAllow, nil)}, nil)}),
			conn(client.IP, web.IP, 80), want{fabricv1.ActionAllow, LayerFabricPolicy, "allow-next-tier", "a"}},
		{"Pass falls through to NetworkPolicy", world([]fabricv1.FabricPolicy{
			policy("pass", "application", 1, webSel, []fabricv1.PolicyRule{rule("pass", fabricv1.ActionPass, nil)}, nil)},
			netpol("prod", "web-isolated", *webSel, nil, nil, nil)),
			conn(client.IP, web.IP, 80), want{fabricv1.ActionDrop, LayerNetworkPolicy, "", ""}},
		{"an Allow before NetworkPolicy overrides its isolation", world([]fabricv1.FabricPolicy{
			policy("allow", "platform", 1, webSel, []fabricv1.PolicyRule{rule("a", fabricv1.ActionAllow, nil)}, nil)},
			netpol("prod", "web-isolated", *webSel, nil, nil, nil)),
			conn(client.IP, web.IP, 80), want{fabricv1.ActionAllow, LayerFabricPolicy, "allow", "a"}},
		{"NetworkPolicy allows what it lists", world(nil, netpol("prod", "from-dev", *webSel, nil,
			[]networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("env", "dev")}}}}, nil)),
			conn(client.IP, web.IP, 80), want{fabricv1.ActionAllow, LayerNetworkPolicy, "prod/from-dev", ""}},
		{"NetworkPolicy isolation is final: Baseline is not consulted", world([]fabricv1.FabricPolicy{
			policy("baseline-allow", "baseline", 1, webSel, []fabricv1.PolicyRule{rule("a", fabricv1.ActionAllow, nil)}, nil)},
			netpol("prod", "same-ns-only", *webSel, nil, []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{}}}}}, nil)),
			conn(client.IP, web.IP, 80), want{fabricv1.ActionDrop, LayerNetworkPolicy, "", ""}},
		{"Baseline applies where no NetworkPolicy isolates", world([]fabricv1.FabricPolicy{
			policy("baseline-deny", "baseline", 1, webSel, []fabricv1.PolicyRule{rule("d", fabricv1.ActionDrop, nil)}, nil)}),
			conn(client.IP, web.IP, 80), want{fabricv1.ActionDrop, LayerFabricPolicy, "baseline-deny", "d"}},
		{"Pass in Baseline: default allow", world([]fabricv1.FabricPolicy{
			policy("baseline-pass", "baseline", 1, webSel, []fabricv1.PolicyRule{rule("p", fabricv1.ActionPass, nil), rule("d", fabricv1.ActionDrop, nil)}, nil)}),
			conn(client.IP, web.IP, 80), want{fabricv1.ActionAllow, LayerDefault, "", ""}},
		{"a NetworkPolicy of another namespace does not isolate", world(nil, netpol("dev", "deny-all", metav1.LabelSelector{}, nil, nil, nil)),
			conn(db.IP, web.IP, 80), want{fabricv1.ActionAllow, LayerDefault, "", ""}},
		{"egress is decided at the source, first", world([]fabricv1.FabricPolicy{
			policy("client-out", "application", 1, clientSel, nil, []fabricv1.PolicyRule{egressRule("no-web", fabricv1.ActionReject, pods(webSel))}),
			policy("web-in", "emergency", 1, webSel, []fabricv1.PolicyRule{rule("a", fabricv1.ActionAllow, nil)}, nil)}),
			conn(client.IP, web.IP, 80), want{fabricv1.ActionReject, LayerFabricPolicy, "client-out", "no-web"}},
		{"both sides allow: the ingress verdict", world([]fabricv1.FabricPolicy{
			policy("client-out", "application", 1, clientSel, nil, []fabricv1.PolicyRule{egressRule("web", fabricv1.ActionAllow, pods(webSel))}),
			policy("web-in", "application", 1, webSel, []fabricv1.PolicyRule{rule("client", fabricv1.ActionAllow, pods(clientSel))}, nil)}),
			conn(client.IP, web.IP, 80), want{fabricv1.ActionAllow, LayerFabricPolicy, "web-in", "client"}},
		{"NetworkPolicy egress isolation", world(nil, netpol("dev", "egress-dns-only", *clientSel, []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}, nil,
			[]networkingv1.NetworkPolicyEgressRule{{Ports: []networkingv1.NetworkPolicyPort{{Protocol: ptr.To(corev1.ProtocolUDP), Port: ptr.To(intstr.FromInt32(53))}}}})),
			conn(client.IP, web.IP, 80), want{fabricv1.ActionDrop, LayerNetworkPolicy, "", ""}},
		{"ports: a named port of the destination", world([]fabricv1.FabricPolicy{policy("p", "application", 1, webSel,
			[]fabricv1.PolicyRule{rule("http", fabricv1.ActionDrop, nil, fabricv1.PolicyPort{Protocol: corev1.ProtocolTCP, Port: ptr.To(intstr.FromString("http"))})}, nil)}),
			conn(client.IP, web.IP, 8080), want{fabricv1.ActionDrop, LayerFabricPolicy, "p", "http"}},
		{"ports: a named port the destination does not have matches nothing", world([]fabricv1.FabricPolicy{policy("p", "application", 1, sel("app", "db"),
			[]fabricv1.PolicyRule{rule("http", fabricv1.ActionDrop, nil, fabricv1.PolicyPort{Protocol: corev1.ProtocolTCP, Port: ptr.To(intstr.FromString("http"))})}, nil)}),
			conn(client.IP, db.IP, 8080), want{fabricv1.ActionAllow, LayerDefault, "", ""}},
		{"ports: a range", world([]fabricv1.FabricPolicy{policy("p", "application", 1, webSel,
			[]fabricv1.PolicyRule{rule("range", fabricv1.ActionDrop, nil, fabricv1.PolicyPort{Protocol: corev1.ProtocolTCP, Port: ptr.To(intstr.FromInt32(8000)), EndPort: ptr.To[int32](8100)})}, nil)}),
			conn(client.IP, web.IP, 8080), want{fabricv1.ActionDrop, LayerFabricPolicy, "p", "range"}},
		{"ports: another protocol does not match", world([]fabricv1.FabricPolicy{policy("p", "application", 1, webSel,
			[]fabricv1.PolicyRule{rule("udp", fabricv1.ActionDrop, nil, fabricv1.PolicyPort{Protocol: corev1.ProtocolUDP, Port: ptr.To(intstr.FromInt32(80))})}, nil)}),
			conn(client.IP, web.IP, 80), want{fabricv1.ActionAllow, LayerDefault, "", ""}},
		{"ipBlock with an exception", world([]fabricv1.FabricPolicy{policy("p", "application", 1, clientSel, nil,
			[]fabricv1.PolicyRule{egressRule("internet-but-doc", fabricv1.ActionDrop, []fabricv1.PolicyPeer{{IPBlock: &fabricv1.IPBlock{CIDR: "0.0.0.0/0", Except: []string{"192.0.2.0/24"}}}})})}),
			conn(client.IP, remote, 443), want{fabricv1.ActionAllow, LayerDefault, "", ""}},
		{"ipBlock", world([]fabricv1.FabricPolicy{policy("p", "application", 1, clientSel, nil,
			[]fabricv1.PolicyRule{egressRule("doc", fabricv1.ActionDrop, []fabricv1.PolicyPeer{{IPBlock: &fabricv1.IPBlock{CIDR: "192.0.2.0/24"}}})})}),
			conn(client.IP, remote, 443), want{fabricv1.ActionDrop, LayerFabricPolicy, "p", "doc"}},
		{"fqdn pattern matches a subdomain's resolved address", world([]fabricv1.FabricPolicy{policy("p", "application", 1, clientSel, nil,
			[]fabricv1.PolicyRule{egressRule("example", fabricv1.ActionReject, []fabricv1.PolicyPeer{{FQDN: "*.example.com"}})})}),
			conn(client.IP, netip.MustParseAddr("192.0.2.20"), 443), want{fabricv1.ActionReject, LayerFabricPolicy, "p", "example"}},
		{"fqdn: what another pod was told does not count", world([]fabricv1.FabricPolicy{policy("p", "application", 1, webSel, nil,
			[]fabricv1.PolicyRule{egressRule("example", fabricv1.ActionReject, []fabricv1.PolicyPeer{{FQDN: "*.example.com"}})})}),
			conn(web.IP, netip.MustParseAddr("192.0.2.20"), 443), want{fabricv1.ActionAllow, LayerDefault, "", ""}},
		{"fqdn pattern does not match the bare suffix", world([]fabricv1.FabricPolicy{policy("p", "application", 1, clientSel, nil,
			[]fabricv1.PolicyRule{egressRule("example", fabricv1.ActionReject, []fabricv1.PolicyPeer{{FQDN: "*.example.com"}})})}),
			conn(client.IP, netip.MustParseAddr("192.0.2.30"), 443), want{fabricv1.ActionAllow, LayerDefault, "", ""}},
		{"cluster peer: the peer cluster's ranges", world([]fabricv1.FabricPolicy{policy("p", "application", 1, webSel,
			[]fabricv1.PolicyRule{rule("from-west", fabricv1.ActionDrop, []fabricv1.PolicyPeer{{Cluster: "west"}})}, nil)}),
			conn(netip.MustParseAddr("10.245.3.4"), web.IP, 80), want{fabricv1.ActionDrop, LayerFabricPolicy, "p", "from-west"}},
		{"namespace selector in appliedTo", world([]fabricv1.FabricPolicy{{ObjectMeta: metav1.ObjectMeta{Name: "dev-out"}, Spec: fabricv1.FabricPolicySpec{
			Tier: "application", Priority: 1, AppliedTo: []fabricv1.PolicyTarget{{NamespaceSelector: sel("env", "dev")}},
			Egress: []fabricv1.PolicyRule{egressRule("no-prod", fabricv1.ActionDrop, []fabricv1.PolicyPeer{{NamespaceSelector: sel("env", "prod")}})}}}}),
			conn(client.IP, db.IP, 5432), want{fabricv1.ActionDrop, LayerFabricPolicy, "dev-out", "no-prod"}},
		{"a policy naming a missing tier enforces nothing", world([]fabricv1.FabricPolicy{policy("orphan", "nope", 1, webSel,
			[]fabricv1.PolicyRule{rule("d", fabricv1.ActionDrop, nil)}, nil)}),
			conn(client.IP, web.IP, 80), want{fabricv1.ActionAllow, LayerDefault, "", ""}},
		{"a user tier between built-ins is evaluated in its place", func() *World {
			w := world([]fabricv1.FabricPolicy{
				policy("compliance", "compliance", 1, webSel, []fabricv1.PolicyRule{rule("d", fabricv1.ActionDrop, nil)}, nil),
				policy("netops", "networkops", 1, webSel, []fabricv1.PolicyRule{rule("a", fabricv1.ActionAllow, nil)}, nil)})
			w.Tiers = append(w.Tiers, tier("compliance", 120))
			return w
		}(), conn(client.IP, web.IP, 80), want{fabricv1.ActionDrop, LayerFabricPolicy, "compliance", "d"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := c.w.Evaluate(c.c)
			if got.Action != c.want.action || got.Layer != c.want.layer || got.Policy != c.want.policy || got.Rule != c.want.rule {
				t.Errorf("got %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestVerdictNamesTierAndLogging(t *testing.T) {
	w := world([]fabricv1.FabricPolicy{policy("p", "platform", 1, sel("app", "web"),
		[]fabricv1.PolicyRule{{Name: "logged", Action: fabricv1.ActionDrop, EnableLogging: true}}, nil)})
	got := w.Evaluate(conn(client.IP, web.IP, 80))
	if got.Tier != "platform" || !got.Logged || got.Direction != networkingv1.PolicyTypeIngress {
		t.Errorf("verdict %+v: want tier platform, logged, ingress", got)
	}
}

func TestFQDNMatches(t *testing.T) {
	for _, c := range []struct {
		pattern, name string
		want          bool
	}{
		{"api.example.com", "api.example.com", true},
		{"api.example.com", "API.Example.com.", true},
		{"api.example.com", "www.example.com", false},
		{"*.example.com", "a.b.example.com", true},
		{"*.example.com", "example.com", false},
		{"*.example.com", "badexample.com", false},
	} {
		if got := FQDNMatches(c.pattern, c.name); got != c.want {
			t.Errorf("FQDNMatches(%q, %q) = %v", c.pattern, c.name, got)
		}
	}
}
