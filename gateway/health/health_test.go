package health_test

import (
	"context"
	"net"
	"net/netip"
	"sort"
	"testing"
	"time"

	"github.com/weft-net/weft/gateway/health"
	"github.com/weft-net/weft/internal/netnstest"
)

type event struct {
	target netip.AddrPort
	up     bool
	at     time.Time
}

// pair is a prober in one namespace and a responder in another, on one switch.
type pair struct {
	prober, responder *netnstest.Netns
	target            netip.AddrPort
	events            chan event
	p                 *health.Prober
	stopResponder     context.CancelFunc
}

func newPair(tb testing.TB) *pair {
	tb.Helper()
	sw := netnstest.NewSwitch(tb)
	x := &pair{prober: netnstest.New(tb, "hp"), responder: netnstest.New(tb, "hr"),
		target: netip.MustParseAddrPort("172.29.12.12:10390"), events: make(chan event, 64)}
	sw.Plug(tb, x.prober, "php", "172.29.12.11/24")
	sw.Plug(tb, x.responder, "phr", "172.29.12.12/24")
	x.startResponder(tb)
	var conn net.PacketConn
	if err := x.prober.Do(func() (err error) { conn, err = net.ListenPacket("udp", "172.29.12.11:0"); return err }); err != nil {
		tb.Fatal(err)
	}
	x.p = health.NewProber(conn, health.Options{OnChange: func(t netip.AddrPort, up bool) {
		x.events <- event{t, up, time.Now()}
	}})
	x.p.SetTargets([]netip.AddrPort{x.target})
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
	if err := x.responder.Do(func() (err error) { conn, err = net.ListenPacket("udp", x.target.String()); return err }); err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = health.Respond(ctx, conn); close(done) }()
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
	if up := x.p.Answering(); len(up) != 1 || !up[x.target.Addr()] {
		t.Errorf("Answering() = %v, want %s", up, x.target.Addr())
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

func TestResponderIgnoresGarbage(t *testing.T) {
	server, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = health.Respond(ctx, server) }()
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
	p.SetTargets([]netip.AddrPort{server.LocalAddr().(*net.UDPAddr).AddrPort()})
	pctx, pcancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer pcancel()
	if err := p.Run(pctx); err != nil {
		t.Fatal(err)
	}
	if st := p.Status(); len(st) != 1 || !st[0].Up {
		t.Errorf("status %+v: the responder did not answer real probes", st)
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
