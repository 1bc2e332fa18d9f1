package health_test

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/health"
	"github.com/weft-net/weft/internal/netnstest"
)

type event struct {
	target health.Target
	up     bool
	at     time.Time
}

// pair is a prober in one namespace and a responder in another, on one switch.
type pair struct {
	prober, responder *netnstest.Netns
	target            health.Target
	events            chan event
	p                 *health.Prober
	stopResponder     context.CancelFunc
}

func newPair(tb testing.TB) *pair {
	tb.Helper()
	sw := netnstest.NewSwitch(tb)
	x := &pair{prober: netnstest.New(tb, "hp"), responder: netnstest.New(tb, "hr"),
		target: health.Target{Addr: netip.MustParseAddrPort("172.29.12.12:10390")}, events: make(chan event, 64)}
	sw.Plug(tb, x.prober, "php", "172.29.12.11/24")
	sw.Plug(tb, x.responder, "phr", "172.29.12.12/24")
	x.startResponder(tb)
	var conn net.PacketConn
	if err := x.prober.Do(func() (err error) { conn, err = net.ListenPacket("udp4", "172.29.12.11:0"); return err }); err != nil {
		tb.Fatal(err)
	}
	x.p = health.NewProber(conn, health.Options{OnChange: func(t health.Target, up bool) {
		x.events <- event{t, up, time.Now()}
	}})
	x.p.SetTargets([]health.Target{x.target})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- x.p.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("prober: %v", err)
		}
	})
	return x
}

func (x *pair) startResponder(tb testing.TB) {
	tb.Helper()
	var conn net.PacketConn
	if err := x.responder.Do(func() (err error) { conn, err = net.ListenPacket("udp4", x.target.Addr.String()); return err }); err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = health.Respond(ctx, conn, nil); close(done) }()
	x.stopResponder = func() { cancel(); <-done }
	tb.Cleanup(x.stopResponder)
}

func (x *pair) wait(tb testing.TB, up bool, limit time.Duration) event {
	tb.Helper()
	select {
	case e := <-x.events:
		if e.up != up || e.target != x.target {
			tb.Fatalf("event %+v, want %s up=%v", e, x.target, up)
		}
		return e
	case <-time.After(limit):
		tb.Fatalf("no up=%v event within %s; status %+v", up, limit, x.p.Status())
	}
	return event{}
}

func TestProberSeesDeathAndReturn(t *testing.T) {
	netnstest.RequireRoot(t)
	x := newPair(t)
	x.wait(t, true, 5*time.Second)
	st := x.p.Status()
	if len(st) != 1 || !st[0].Up || st[0].RTT <= 0 || st[0].Received < 2 {
		t.Errorf("status %+v: want the target up with an RTT", st)
	}
	if up := x.p.Answering(); len(up) != 1 || !up[x.target.Addr.Addr()] {
		t.Errorf("Answering() = %v, want %s", up, x.target.Addr.Addr())
	}

	t.Log("the responder dies: down")
	killed := time.Now()
	x.stopResponder()
	e := x.wait(t, false, 5*time.Second)
	t.Logf("down %s after the responder died", e.at.Sub(killed).Round(time.Millisecond))

	t.Log("the responder returns: up")
	x.startResponder(t)
	x.wait(t, true, 5*time.Second)

	t.Log("the responder's link goes down: down; and up again")
	x.responder.MustIP(t, "link", "set", "eth0", "down")
	x.wait(t, false, 5*time.Second)
	x.responder.MustIP(t, "link", "set", "eth0", "up")
	x.wait(t, true, 5*time.Second)

	t.Log("a target removed is no longer reported")
	x.p.SetTargets(nil)
	if st := x.p.Status(); len(st) != 0 {
		t.Errorf("status after removing every target: %+v", st)
	}
}

// A prober that did not run for a while (its process starved of CPU or stopped) does not
// take its own stall for its targets' death: it decides on the probes it sent.
func TestAStalledProberKeepsItsTargetsUp(t *testing.T) {
	netnstest.RequireRoot(t)
	x := newPair(t)
	x.wait(t, true, 5*time.Second)
	for i := 0; i < 5; i++ {
		x.p.Stall(time.Second) // five times the silence that makes a target down
		select {
		case e := <-x.events:
			t.Fatalf("stall %d: %s went up=%v, though it answered all along", i+1, e.target, e.up)
		case <-time.After(400 * time.Millisecond):
		}
	}
	t.Log("nor its receiver's lag: answers waiting unread in its socket are no silence")
	for i := 0; i < 3; i++ {
		go x.p.PauseReceiver(300 * time.Millisecond) // the silence that makes a target down is 200 ms
		select {
		case e := <-x.events:
			t.Fatalf("receiver paused %d: %s went up=%v, though it answered all along", i+1, e.target, e.up)
		case <-time.After(400 * time.Millisecond):
		}
	}
	t.Log("a target that dies during a stall is still found dead after it")
	go x.p.Stall(time.Second)
	time.Sleep(10 * time.Millisecond)
	x.stopResponder()
	x.wait(t, false, 5*time.Second)
}

func TestResponderIgnoresGarbage(t *testing.T) {
	server, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = health.Respond(ctx, server, nil) }()
	client, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	for _, junk := range [][]byte{nil, []byte("hello"), make([]byte, 21), make([]byte, 200)} {
		_, _ = client.WriteTo(junk, server.LocalAddr())
	}
	_ = client.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, _, err := client.ReadFrom(make([]byte, 64)); err == nil {
		t.Errorf("the responder answered garbage (%d bytes)", n)
	}
	// A real prober on loopback still gets answers.
	_ = client.SetReadDeadline(time.Time{})
	p := health.NewProber(client, health.Options{Interval: 20 * time.Millisecond})
	p.SetTargets([]health.Target{{Addr: server.LocalAddr().(*net.UDPAddr).AddrPort()}})
	pctx, pcancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer pcancel()
	if err := p.Run(pctx); err != nil {
		t.Fatal(err)
	}
	if st := p.Status(); len(st) != 1 || !st[0].Up {
		t.Errorf("status %+v: the responder did not answer real probes", st)
	}
}

// A responder with a filter answers only the probes from addresses it accepts, as it
// accepts them now: a gateway answers its peer gateways at once and its own cluster's
// agents only once it can carry their traffic.
func TestResponderAnswersOnlyWhomItAccepts(t *testing.T) {
	server, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var agentsToo atomic.Bool
	peer, agent := netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		_ = health.Respond(ctx, server, func(from netip.Addr) bool { return from == peer || agentsToo.Load() })
	}()
	answered := func(from netip.Addr) bool {
		t.Helper()
		conn, err := net.ListenPacket("udp4", netip.AddrPortFrom(from, 0).String())
		if err != nil {
			t.Fatal(err)
		}
		p := health.NewProber(conn, health.Options{Interval: 20 * time.Millisecond})
		p.SetTargets([]health.Target{{Addr: server.LocalAddr().(*net.UDPAddr).AddrPort()}})
		pctx, pcancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer pcancel()
		if err := p.Run(pctx); err != nil {
			t.Fatal(err)
		}
		return p.Answering()[server.LocalAddr().(*net.UDPAddr).AddrPort().Addr()]
	}
	if !answered(peer) {
		t.Error("a probe from an accepted address went unanswered")
	}
	if answered(agent) {
		t.Error("a probe from an address the filter refuses was answered")
	}
	agentsToo.Store(true)
	if !answered(agent) {
		t.Error("once the filter accepts the address, its probes still go unanswered")
	}
}

// BenchmarkDetection measures how long after a responder dies the prober reports it down
// (defaults: probes every 100 ms, down after 3 silent intervals). Each operation is one
// death; p50 and p99 are reported.
func BenchmarkDetection(b *testing.B) {
	netnstest.RequireRoot(b)
	x := newPair(b)
	x.wait(b, true, 5*time.Second)
	gaps := make([]time.Duration, 0, b.N)
	for i := 0; i < b.N; i++ {
		killed := time.Now()
		x.stopResponder()
		e := x.wait(b, false, 5*time.Second)
		gaps = append(gaps, e.at.Sub(killed))
		b.StopTimer()
		x.startResponder(b)
		x.wait(b, true, 5*time.Second)
		b.StartTimer()
	}
	sort.Slice(gaps, func(i, j int) bool { return gaps[i] < gaps[j] })
	b.ReportMetric(float64(gaps[len(gaps)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(gaps[(len(gaps)-1)*99/100].Microseconds())/1000, "p99-ms")
}

// A target probed through a device (a tunnel) is up only while that device carries probes
// and answers both ways, whatever the underlay does; a target probed by the route, only
// while the route does. The "tunnel" here is a second veth pair; as weft-gateway's tunnel
// devices, each end holds its node's address (a /32), so that loose reverse-path filtering
// accepts what comes in by it from an address routed elsewhere.
func TestProbesThroughADevice(t *testing.T) {
	netnstest.RequireRoot(t)
	x := newPair(t)
	x.prober.MustIP(t, "link", "add", "tun0", "type", "veth", "peer", "name", "tun0", "netns", x.responder.Name)
	for n, addr := range map[*netnstest.Netns]string{x.prober: "172.29.12.11/32", x.responder: "172.29.12.12/32"} {
		n.MustIP(t, "addr", "add", addr, "dev", "tun0")
		n.MustIP(t, "link", "set", "tun0", "up")
		// As weft-gateway sets it: answers come in by another device than the route back.
		if out, err := n.Run("sysctl", "-qw", "net.ipv4.conf.all.rp_filter=2"); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	x.wait(t, true, 5*time.Second)
	via := health.Target{Addr: x.target.Addr, Via: "tun0"}
	x.p.SetTargets([]health.Target{x.target, via})
	state := func() (plain, tunnel bool) {
		for _, st := range x.p.Status() {
			switch st.Target {
			case x.target:
				plain = st.Up
			case via:
				tunnel = st.Up
			}
		}
		return plain, tunnel
	}
	waitFor := func(what string, plain, tunnel bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			p, tu := state()
			if p == plain && tu == tunnel {
				t.Logf("%s: probed by the route up=%v, through tun0 up=%v", what, p, tu)
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: probed by the route up=%v, through tun0 up=%v; want %v, %v (status %+v)", what, p, tu, plain, tunnel, x.p.Status())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("both links up", true, true)
	st := x.p.Status()
	for _, s := range st {
		if s.Target == via && (s.Received < 2 || s.RTT <= 0) {
			t.Errorf("through tun0: %+v", s)
		}
	}

	// Probes the underlay drops: only those by the route are lost. (Its link stays up: the
	// reverse-path check needs the route back.)
	nft := func(rules string) {
		t.Helper()
		if out, err := x.responder.RunStdin(rules, "nft", "-f", "-"); err != nil {
			t.Fatalf("nft: %v: %s", err, out)
		}
	}
	nft(`table inet t { chain in { type filter hook input priority 0; iifname "eth0" udp dport 10390 drop; }; }`)
	waitFor("the underlay dropping probes", false, true)
	nft(`delete table inet t`)
	waitFor("the underlay back", true, true)

	// The probe leaves by tun0 but the answer would have to come back by it too.
	x.responder.MustIP(t, "link", "set", "tun0", "down")
	waitFor("the tunnel down", true, false)
	x.responder.MustIP(t, "link", "set", "tun0", "up")
	waitFor("the tunnel back", true, true)

	// A device that does not exist is no route around it.
	x.prober.MustIP(t, "link", "del", "tun0")
	waitFor("the tunnel gone", true, false)

	// A device made again (another index) is followed, looked up in the probe socket's
	// namespace, not the test's.
	x.prober.MustIP(t, "link", "add", "tun0", "type", "veth", "peer", "name", "tun0", "netns", x.responder.Name)
	for n, addr := range map[*netnstest.Netns]string{x.prober: "172.29.12.11/32", x.responder: "172.29.12.12/32"} {
		n.MustIP(t, "addr", "add", addr, "dev", "tun0")
		n.MustIP(t, "link", "set", "tun0", "up")
	}
	waitFor("the tunnel made again", true, true)
}

// An answer counts only if it names one of the prober's recent probes (a random nonce the
// responder echoes): a forger sending answers from the target's address — here in place
// of the responder, answering every probe with another sequence number, and replaying a
// stale answer — never makes the target up.
func TestForgedAnswersAreIgnored(t *testing.T) {
	forger, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer forger.Close()
	var first []byte
	go func() {
		buf := make([]byte, 64)
		for {
			n, from, err := forger.ReadFrom(buf)
			if err != nil {
				return
			}
			if n != 21 {
				continue
			}
			ans := append([]byte(nil), buf[:n]...)
			ans[4] = 2 // an answer
			if first == nil {
				first = append([]byte(nil), ans...)
			}
			// Another sequence number, and the first answer again (a replay).
			binary.BigEndian.PutUint64(ans[5:], binary.BigEndian.Uint64(ans[5:])+1)
			_, _ = forger.WriteTo(ans, from)
			_, _ = forger.WriteTo(first, from)
		}
	}()
	client, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	p := health.NewProber(client, health.Options{Interval: 10 * time.Millisecond})
	p.SetTargets([]health.Target{{Addr: forger.LocalAddr().(*net.UDPAddr).AddrPort()}})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if err := p.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if st := p.Status(); len(st) != 1 || st[0].Up || st[0].Received > 1 {
		t.Errorf("status %+v: forged answers made the target up (or were counted)", st)
	}
}
