package clusterpeer

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

func TestCheckAdvertisementHoldsBackWhatAPeerMustNotSay(t *testing.T) {
	key := "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	good := func() peerInfo {
		return peerInfo{PodCIDRs: []string{"10.245.0.0/16"}, ServiceCIDRs: []string{"10.97.0.0/16"},
			Gateways: []fabricv1.GatewayStatus{{Node: "gw-1", Endpoint: "172.30.2.11:51820", PublicKey: key,
				PeerPorts: map[string]int32{"c1/gw-1": 51821}}}}
	}
	own := []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("10.96.0.0/16")}
	if why := checkAdvertisement(good(), own); why != "" {
		t.Fatalf("a good advertisement is held back: %s", why)
	}
	many := good()
	for i := range 10000 {
		many.Gateways = append(many.Gateways, fabricv1.GatewayStatus{Node: fmt.Sprintf("gw-x%d", i), Endpoint: "172.30.2.12:51820"})
	}
	cases := map[string]struct {
		edit func(*peerInfo)
		want string
	}{
		"10,000 gateways": {func(p *peerInfo) { *p = many }, "10001 gateways; at most 64"},
		"a huge range list": {func(p *peerInfo) {
			for i := range 100 {
				p.PodCIDRs = append(p.PodCIDRs, fmt.Sprintf("10.%d.0.0/16", 100+i))
			}
		}, "101 pod ranges"},
		"a range that is no CIDR":        {func(p *peerInfo) { p.ServiceCIDRs = []string{"everything"} }, `"everything" is not a CIDR`},
		"an endpoint that is no address": {func(p *peerInfo) { p.Gateways[0].Endpoint = "gw.example:51820" }, "is not an address and port"},
		"the metadata address":           {func(p *peerInfo) { p.Gateways[0].Endpoint = "169.254.169.254:80" }, "not a unicast address"},
		"loopback":                       {func(p *peerInfo) { p.Gateways[0].Endpoint = "127.0.0.1:51820" }, "not a unicast address"},
		"port 0":                         {func(p *peerInfo) { p.Gateways[0].Endpoint = "172.30.2.11:0" }, "not a unicast address"},
		"an endpoint in our pod range":   {func(p *peerInfo) { p.Gateways[0].Endpoint = "10.244.1.5:51820" }, "lies in this cluster's range 10.244.0.0/16"},
		"a key that is no key":           {func(p *peerInfo) { p.Gateways[0].NextPublicKey = "bm90IGEga2V5" }, "next public key is not a WireGuard key"},
		"a nameless gateway":             {func(p *peerInfo) { p.Gateways[0].Node = "" }, "has no valid node name"},
		"a gateway twice": {func(p *peerInfo) {
			p.Gateways = append(p.Gateways, p.Gateways[0])
		}, "gateway gw-1 twice"},
		"a port out of range": {func(p *peerInfo) { p.Gateways[0].PeerPorts["c1/gw-2"] = 70000 }, "is 70000"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			p := good()
			c.edit(&p)
			if why := checkAdvertisement(p, own); !strings.Contains(why, c.want) {
				t.Errorf("held back for %q, want %q", why, c.want)
			}
		})
	}
}
