package geneve_test

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/gateway/tunnel"
	"github.com/weft-net/weft/gateway/tunnel/geneve"
	"github.com/weft-net/weft/internal/netnstest"
	"github.com/weft-net/weft/internal/tunneltest"
)

func TestMain(m *testing.M) {
	tunneltest.RunHelper(geneve.Name, geneve.Register)
	os.Exit(m.Run())
}

func TestGeneveBetweenGateways(t *testing.T) {
	netnstest.RequireRoot(t)
	sw := netnstest.NewSwitch(t)
	a := tunneltest.NewEnd(t, sw, "gna", "172.29.11.11", geneve.DefaultPort, "10.210.1.1/32")
	b := tunneltest.NewEnd(t, sw, "gnb", "172.29.11.12", geneve.DefaultPort, "10.210.2.1/32")
	t.Logf("tunnel mode: %s", a.Mode)
	a.SetPeers(b.Peer("10.210.2.0/24", "10.211.2.0/24"))
	b.SetPeers(a.Peer("10.210.1.0/24"))

	t.Run("ICMP, TCP and UDP both ways", func(t *testing.T) {
		if err := a.NS.PingUntil("10.210.2.1", 5*time.Second); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			server, client *netnstest.Netns
			addr           string
		}{{b.NS, a.NS, "10.210.2.1:5400"}, {a.NS, b.NS, "10.210.1.1:5400"}} {
			if err := netnstest.TransferTCP(c.server, c.client, c.addr, 8<<20); err != nil {
				t.Fatal(err)
			}
		}
		sink, err := b.NS.ListenUDP("10.210.2.1:9999")
		if err != nil {
			t.Fatal(err)
		}
		defer sink.Close()
		if err := a.NS.SendUDPFlows(netip.MustParseAddrPort("10.210.1.1:30000"), netip.MustParseAddrPort("10.210.2.1:9999"), 16); err != nil {
			t.Fatal(err)
		}
		if got := netnstest.ReceiveUDP(sink, 16, 3*time.Second); len(got) != 16 {
			t.Errorf("b received %d of 16 datagrams", len(got))
		}
		st := a.PeerStatus(b.Iface)
		if st.TxBytes < 8<<20 || st.RxBytes < 8<<20 || st.Endpoint != netip.MustParseAddrPort(fmt.Sprintf("172.29.11.12:%d", geneve.DefaultPort)) {
			t.Errorf("a's status of b: %+v, want 8 MiB each way and b's endpoint", st)
		}
	})

	t.Run("health probes pass through the tunnel, and fail when the far end forgets this one", func(t *testing.T) {
		if st := a.ProbeThrough(b); !st.Up {
			t.Errorf("health probes from a to b through the tunnel: %+v, want up", st)
		}
		if st := b.ProbeThrough(a); !st.Up {
			t.Errorf("health probes from b to a through the tunnel: %+v, want up", st)
		}
		// b drops what a sends (a is no peer of b's), though both still answer over the
		// underlay.
		other := tunneltest.NewEnd(t, sw, "gnx", "172.29.11.14", geneve.DefaultPort, "10.210.8.1/32")
		b.SetPeers(other.Peer("10.210.8.0/24"))
		if st := a.ProbeThrough(b); st.Up || st.Received != 0 {
			t.Errorf("health probes through a tunnel the far end dropped: %+v, want no answer", st)
		}
		b.SetPeers(a.Peer("10.210.1.0/24"))
		if st := a.ProbeThrough(b); !st.Up {
			t.Errorf("health probes once b has a again: %+v, want up", st)
		}
		other.Stop()
	})

	t.Run("a 1400-byte packet passes unfragmented", func(t *testing.T) {
		if out, err := a.NS.Run("ping", "-c", "2", "-W", "2", "-M", "do", "-s", "1400", "10.210.2.1"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if out, _ := a.NS.Run("ping", "-c", "1", "-W", "1", "-M", "do", "-s", fmt.Sprint(geneve.DefaultMTU), "10.210.2.1"); !strings.Contains(out, "message too long") && !strings.Contains(out, "mtu") {
			t.Errorf("a packet beyond the tunnel MTU was not refused locally:\n%s", out)
		}
	})

	t.Run("routes follow the peers", func(t *testing.T) {
		if got := a.Routes(); !strings.Contains(got, "10.210.2.0/24") || !strings.Contains(got, "10.211.2.0/24") {
			t.Errorf("routes into the tunnel on a: %q", got)
		}
		a.SetPeers(b.Peer("10.210.2.0/24"))
		if got := a.Routes(); strings.Contains(got, "10.211.2.0/24") || !strings.Contains(got, "10.210.2.0/24") {
			t.Errorf("routes after the peer dropped a range: %q", got)
		}
	})

	t.Run("each peer has its own device; a shared range is spread over both; standby peers still deliver", func(t *testing.T) {
		c := tunneltest.NewEnd(t, sw, "gnc", "172.29.11.13", geneve.DefaultPort, "10.210.9.1/32")
		// b and c stand for two gateways of one cluster: both answer 10.210.9.1.
		if out, err := b.NS.Run("ip", "addr", "add", "10.210.9.1/32", "dev", b.PeerStatus(a.Iface).Device); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if out, err := a.NS.Run("sysctl", "-qw", "net.ipv4.fib_multipath_hash_policy=1"); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		a.SetPeers(b.Peer("10.210.2.0/24", "10.210.9.0/24"), c.Peer("10.210.9.0/24"))
		c.SetPeers(a.Peer("10.210.1.0/24"))
		if got := strings.Fields(a.Devices("tt")); len(got) != 2 {
			t.Errorf("a's devices: %v, want one per peer", got)
		}
		if out, _ := a.NS.Run("ip", "route", "show", "10.210.9.0/24"); strings.Count(out, "nexthop") != 2 {
			t.Errorf("route to the shared range:\n%s\nwant two next hops", out)
		}
		tunneltest.CheckSpread(t, a, b, c, netip.MustParseAddrPort("10.210.9.1:9"))
		standby := c.Peer("10.210.9.0/24")
		standby.Standby = true
		a.SetPeers(b.Peer("10.210.2.0/24", "10.210.9.0/24"), standby)
		if out, _ := a.NS.Run("ip", "route", "show", "10.210.9.0/24"); strings.Contains(out, "nexthop") {
			t.Errorf("route to the shared range with c standing by:\n%s\nwant b's device only", out)
		}
		// Replies to 10.210.9.1 go to b (the active one), so what a takes from c is counted
		// at a.
		sink, err := a.NS.ListenUDP("10.210.1.1:9999")
		if err != nil {
			t.Fatal(err)
		}
		defer sink.Close()
		if err := c.NS.SendUDPFlows(netip.MustParseAddrPort("10.210.9.1:30200"), netip.MustParseAddrPort("10.210.1.1:9999"), 4); err != nil {
			t.Fatal(err)
		}
		if got := netnstest.ReceiveUDP(sink, 4, 3*time.Second); len(got) != 4 {
			t.Errorf("a received %d of 4 datagrams from the standby c", len(got))
		}
		a.SetPeers(b.Peer("10.210.2.0/24"))
		if got := strings.Fields(a.Devices("tt")); len(got) != 1 {
			t.Errorf("a's devices after c left: %v, want one", got)
		}
		// c is no peer of a any more: what it sends is dropped.
		if err := c.NS.SendUDPFlows(netip.MustParseAddrPort("10.210.9.1:30300"), netip.MustParseAddrPort("10.210.1.1:9999"), 4); err != nil {
			t.Fatal(err)
		}
		if got := netnstest.ReceiveUDP(sink, 4, time.Second); len(got) != 0 {
			t.Errorf("a took %d datagrams from c, which is no peer of it any more", len(got))
		}
	})

	t.Run("bad peers are refused with a clear error", func(t *testing.T) {
		noEndpoint := b.Peer("10.210.2.0/24")
		noEndpoint.Endpoint = netip.AddrPort{}
		for _, c := range []struct {
			req  tunneltest.Request
			want string
		}{
			{tunneltest.Request{Op: "peers", Peers: []tunnel.Peer{b.Peer("10.210.2.0/24"), b.Peer("10.210.3.0/24")}}, "unique"},
			{tunneltest.Request{Op: "peers", Peers: []tunnel.Peer{noEndpoint}}, "no endpoint"},
			{tunneltest.Request{Op: "stage", ID: "r1", At: time.Now()}, "no keys"},
		} {
			if r := a.Do(c.req); !strings.Contains(r.Error, c.want) {
				t.Errorf("%s: error %q, want one saying %q", c.req.Op, r.Error, c.want)
			}
		}
		a.SetPeers(b.Peer("10.210.2.0/24"))
		if err := a.NS.PingUntil("10.210.2.1", 3*time.Second); err != nil {
			t.Errorf("after refused peers: %v", err)
		}
	})

	t.Run("closing removes the devices", func(t *testing.T) {
		a.Stop()
		if got := a.Devices("tt"); got != "" {
			t.Errorf("devices left after the tunnel closed: %s", got)
		}
	})
}
