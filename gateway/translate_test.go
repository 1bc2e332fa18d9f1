package gateway_test

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/gateway"
	"github.com/weft-net/weft/internal/netnstest"
)

// overlappingPeer is a ClusterPeer, Accepted, with the same pod range as this cluster's,
// seen here at alias and seeing this cluster at seenAs.
func overlappingPeer(id, alias, seenAs string) fabricv1.ClusterPeer {
	return fabricv1.ClusterPeer{Spec: fabricv1.ClusterPeerSpec{ClusterID: id}, Status: fabricv1.ClusterPeerStatus{
		Conditions: []metav1.Condition{{Type: fabricv1.ConditionAccepted, Status: metav1.ConditionTrue}},
		PodCIDRs:   []string{"10.244.0.0/16"},
		Aliases:    []fabricv1.CIDRAlias{{CIDR: "10.244.0.0/16", Alias: alias}},
		SeenAs:     []fabricv1.CIDRAlias{{CIDR: "10.244.0.0/16", Alias: seenAs}},
	}}
}

// Two clusters with the same pod range, a pod in each at the same address: through their
// gateways' translation each reaches the other at its alias, and sees the other at the
// alias its own cluster gives it (TCP with data both ways, UDP, ICMP). Cluster A sees C at
// 100.64.0.0/16, C sees A at 100.65.0.0/16. The tunnel is a veth named like a WireGuard
// device; the gateways' tunnel filter is in place too (it drops what comes out of a tunnel
// with this cluster's own addresses, which an untranslated packet would carry).
func TestOverlappingClustersReachEachOtherThroughAliases(t *testing.T) {
	netnstest.RequireRoot(t)
	apod, agw, cgw, cpod := twoClusters(t, "ov", "10.244")
	cpod.ServeEcho(t, netip.MustParseAddr("10.244.1.5"), nil, []int{9000})
	if o := apod.Probe("udp", netip.MustParseAddrPort("100.64.1.5:9000"), 500*time.Millisecond); o == netnstest.Connected {
		t.Fatal("without translation a pod reached the other cluster's pod at its alias: the test shows nothing")
	}

	apply := func(gw *netnstest.Netns, peer fabricv1.ClusterPeer) {
		t.Helper()
		if err := gw.Do(func() error {
			return gateway.SetTranslation("weft-wg*", gateway.Translations([]fabricv1.ClusterPeer{peer}))
		}); err != nil {
			t.Fatal(err)
		}
	}
	apply(agw, overlappingPeer("c", "100.64.0.0/16", "100.65.0.0/16"))
	apply(cgw, overlappingPeer("a", "100.65.0.0/16", "100.64.0.0/16"))

	// Who the server sees: each cluster's alias for the other.
	for _, c := range []struct {
		name         string
		client, srv  *netnstest.Netns
		dial, seenAs string
	}{
		{"A's pod to C's", apod, cpod, "100.64.1.5:8080", "100.65.1.5"},
		{"C's pod to A's", cpod, apod, "100.65.1.5:8080", "100.64.1.5"},
	} {
		if got, err := peerAddress(c.srv, c.client, c.dial); err != nil || got != c.seenAs {
			t.Errorf("%s at %s: the server saw %q (%v), want %s", c.name, c.dial, got, err, c.seenAs)
		}
		listen := strings.Replace(c.dial, strings.Split(c.dial, ".")[0]+"."+strings.Split(c.dial, ".")[1], "10.244", 1)
		if err := netnstest.TransferTCPVia(c.srv, c.client, listen, c.dial, 4<<20); err != nil {
			t.Errorf("%s: 4 MiB through the translation: %v", c.name, err)
		}
	}
	if o := apod.Probe("udp", netip.MustParseAddrPort("100.64.1.5:9000"), time.Second); o != netnstest.Connected {
		t.Errorf("UDP from A's pod to C's at its alias: %s", o)
	}
	if err := apod.Ping("100.64.1.5", 1); err != nil {
		t.Errorf("ping from A's pod to C's at its alias: %v", err)
	}

	// Had C's gateway not known how A sees it, its pod's packets would come out of A's tunnel
	// with A's own addresses as their source: the tunnel filter drops them.
	blind := overlappingPeer("a", "100.65.0.0/16", "100.64.0.0/16")
	blind.Status.SeenAs = nil
	apply(cgw, blind)
	if _, err := peerAddress(apod, cpod, "100.65.1.5:8080"); err == nil {
		t.Error("untranslated, C's pod still reached A's pod")
	}
	if out, _ := agw.Run("nft", "list", "chain", "inet", "weft-gateway", "from_tunnel"); !strings.Contains(out, "own addresses\"") ||
		strings.Contains(out, "packets 0 bytes 0 drop comment \"from a tunnel with this cluster's own addresses\"") {
		t.Errorf("the tunnel filter counted no packet with this cluster's own source:\n%s", out)
	}
}

// twoClusters makes two clusters' pod and gateway namespaces (prefix names them): A's pod at
// 10.244.1.5 behind its gateway, C's pod at <cPods>.1.5 behind its, the gateways joined by a
// veth named like WireGuard devices (with their tunnel filter); A routes 100.64.0.0/16 (C as A
// sees it when C overlaps) and C 100.65.0.0/16 into the tunnel, and, when C's pods are
// elsewhere, each routes the other's real range there too.
func twoClusters(t testing.TB, prefix, cPods string) (apod, agw, cgw, cpod *netnstest.Netns) {
	apod, agw = netnstest.New(t, prefix+"apod"), netnstest.New(t, prefix+"agw")
	cgw, cpod = netnstest.New(t, prefix+"cgw"), netnstest.New(t, prefix+"cpod")
	netnstest.Link(t, apod, "eth0", "10.244.1.5/24", agw, "p0", "10.244.1.1/24")
	netnstest.Link(t, agw, "weft-wg-c", "192.0.2.1/30", cgw, "weft-wg-a", "192.0.2.2/30")
	netnstest.Link(t, cpod, "eth0", cPods+".1.5/24", cgw, "p0", cPods+".1.1/24")
	apod.MustIP(t, "route", "add", "default", "via", "10.244.1.1")
	cpod.MustIP(t, "route", "add", "default", "via", cPods+".1.1")
	agw.MustIP(t, "route", "add", "100.64.0.0/16", "via", "192.0.2.2", "dev", "weft-wg-c")
	cgw.MustIP(t, "route", "add", "100.65.0.0/16", "via", "192.0.2.1", "dev", "weft-wg-a")
	if cPods != "10.244" {
		agw.MustIP(t, "route", "add", cPods+".0.0/16", "via", "192.0.2.2", "dev", "weft-wg-c")
		cgw.MustIP(t, "route", "add", "10.244.0.0/16", "via", "192.0.2.1", "dev", "weft-wg-a")
	}
	for _, c := range []struct {
		gw  *netnstest.Netns
		own string
	}{{agw, "10.244.0.0/16"}, {cgw, cPods + ".0.0/16"}} {
		if out, err := c.gw.Run("sysctl", "-w", "net.ipv4.ip_forward=1"); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if err := c.gw.Do(func() error {
			return gateway.PrepareKernel("weft-wg*", []netip.Prefix{netip.MustParsePrefix(c.own)}, 0)
		}); err != nil {
			t.Fatal(err)
		}
	}
	return apod, agw, cgw, cpod
}

// BenchmarkTranslatedPath measures TCP from a pod to a pod of another cluster through both
// gateways: once between overlapping clusters, through the translation (both gateways
// rewrite), once between clusters whose ranges differ, with no translation, on the same
// shape of path in the same run. The tunnel is a veth, so that what translation costs is not
// hidden behind encryption (a WireGuard tunnel costs far more than either).
func BenchmarkTranslatedPath(b *testing.B) {
	netnstest.RequireRoot(b)
	const size, rounds = 512 << 20, 5
	type path struct {
		client, server *netnstest.Netns
		listen, dial   string
		gbits          []float64
	}
	apod, _, _, cpod := twoClusters(b, "bp", "10.245")
	plain := &path{client: apod, server: cpod, listen: "10.245.1.5:5201", dial: "10.245.1.5:5201"}
	apod, agw, cgw, cpod := twoClusters(b, "bt", "10.244")
	for _, c := range []struct {
		gw   *netnstest.Netns
		peer fabricv1.ClusterPeer
	}{{agw, overlappingPeer("c", "100.64.0.0/16", "100.65.0.0/16")}, {cgw, overlappingPeer("a", "100.65.0.0/16", "100.64.0.0/16")}} {
		if err := c.gw.Do(func() error {
			return gateway.SetTranslation("weft-wg*", gateway.Translations([]fabricv1.ClusterPeer{c.peer}))
		}); err != nil {
			b.Fatal(err)
		}
	}
	translated := &path{client: apod, server: cpod, listen: "10.244.1.5:5201", dial: "100.64.1.5:5201"}
	// Interleaved, the median of each: the two cores' other work hits both alike.
	for range rounds {
		for _, p := range []*path{plain, translated} {
			g, err := netnstest.MeasureTCPVia(p.server, p.client, p.listen, p.dial, netnstest.WarmTCP, size)
			if err != nil {
				b.Fatal(err)
			}
			p.gbits = append(p.gbits, g)
		}
	}
	median := func(v []float64) float64 { slices.Sort(v); return v[len(v)/2] }
	t, pl := median(translated.gbits), median(plain.gbits)
	b.ReportMetric(t, "translated-Gbit/s")
	b.ReportMetric(pl, "plain-Gbit/s")
	b.ReportMetric(t/pl, "ratio")
	b.Logf("TCP pod to pod across two gateways, median of %d interleaved runs: through the overlap translation %.2f Gbit/s, between non-overlapping clusters %.2f Gbit/s (%.2f×)",
		rounds, t, pl, t/pl)
}

// peerAddress connects from client to dial, where a server in srv tells the address it
// sees the client at.
func peerAddress(srv, client *netnstest.Netns, dial string) (string, error) {
	ap := netip.MustParseAddrPort(dial)
	l, err := srv.Listen(netip.AddrPortFrom(netip.MustParseAddr("10.244.1.5"), ap.Port()).String())
	if err != nil {
		return "", err
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = fmt.Fprint(c, c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap())
	}()
	c, err := client.Dial(dial, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), err
}
