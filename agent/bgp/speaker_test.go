package bgp_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/weft-net/weft/agent/bgp"
	"github.com/weft-net/weft/internal/netnstest"
	"github.com/weft-net/weft/lab/router"
)

// Each speaker runs in its own process inside a node's network namespace, as an agent
// does: the test binary started again as a helper that applies the configurations it
// reads on stdin and answers with its status.

const helperEnv = "WEFT_BGP_SPEAKER_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		runHelper()
		return
	}
	os.Exit(m.Run())
}

type request struct {
	Apply    *bgp.Config `json:"apply,omitempty"`
	Status   bool        `json:"status,omitempty"`
	Withdraw bool        `json:"withdraw,omitempty"`
	Received bool        `json:"received,omitempty"`
}

type response struct {
	Error  string           `json:"error,omitempty"`
	Status []bgp.PeerStatus `json:"status,omitempty"`
	Routes []bgp.Route      `json:"routes,omitempty"`
}

func runHelper() {
	s := bgp.New(nil)
	in := bufio.NewScanner(os.Stdin)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var req request
		var resp response
		if err := json.Unmarshal(in.Bytes(), &req); err != nil {
			resp.Error = err.Error()
		}
		switch {
		case req.Apply != nil:
			if err := s.Apply(context.Background(), *req.Apply); err != nil {
				resp.Error = err.Error()
			}
		case req.Withdraw:
			if err := s.Withdraw(); err != nil {
				resp.Error = err.Error()
			}
		case req.Received:
			routes, err := s.Received()
			resp.Routes = routes
			if err != nil {
				resp.Error = err.Error()
			}
		case req.Status:
			st, err := s.Status(context.Background())
			resp.Status = st
			if err != nil {
				resp.Error = err.Error()
			}
		}
		_ = out.Encode(resp)
	}
	// stdin closed: exit without saying goodbye to peers, as a killed agent would.
	os.Exit(0)
}

// speaker is a helper process.
type speaker struct {
	t   testing.TB
	cmd *exec.Cmd
	mu  sync.Mutex
	in  io.WriteCloser
	out *bufio.Scanner
}

func startSpeaker(t testing.TB, n *netnstest.Netns) *speaker {
	t.Helper()
	cmd := exec.Command("nsenter", "--net="+n.Path(), "--", os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	cmd.Stderr = &prefixWriter{t: t, prefix: n.Name + ": "}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &speaker{t: t, cmd: cmd, in: in, out: bufio.NewScanner(out)}
	t.Cleanup(s.kill)
	return s
}

func (s *speaker) kill() {
	if s.cmd.ProcessState == nil {
		_ = s.cmd.Process.Signal(syscall.SIGKILL)
		_ = s.cmd.Wait()
	}
}

func (s *speaker) call(req request) response {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	b, _ := json.Marshal(req)
	if _, err := s.in.Write(append(b, '\n')); err != nil {
		s.t.Fatalf("speaker: %v", err)
	}
	if !s.out.Scan() {
		s.t.Fatalf("speaker exited: %v", s.out.Err())
	}
	var resp response
	if err := json.Unmarshal(s.out.Bytes(), &resp); err != nil {
		s.t.Fatal(err)
	}
	return resp
}

func (s *speaker) apply(cfg bgp.Config) {
	s.t.Helper()
	if r := s.call(request{Apply: &cfg}); r.Error != "" {
		s.t.Fatalf("apply: %s", r.Error)
	}
}

func (s *speaker) status() []bgp.PeerStatus {
	s.t.Helper()
	r := s.call(request{Status: true})
	if r.Error != "" {
		s.t.Fatalf("status: %s", r.Error)
	}
	return r.Status
}

// waitPeer waits until the speaker reports the peer at addr satisfying ok.
func (s *speaker) waitPeer(addr netip.Addr, limit time.Duration, ok func(bgp.PeerStatus) bool) bgp.PeerStatus {
	s.t.Helper()
	deadline := time.Now().Add(limit)
	var last []bgp.PeerStatus
	for time.Now().Before(deadline) {
		last = s.status()
		for _, p := range last {
			if p.Address == addr && ok(p) {
				return p
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("peer %s after %v: %+v", addr, limit, last)
	return bgp.PeerStatus{}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

type prefixWriter struct {
	t      testing.TB
	prefix string
}

func (w *prefixWriter) Write(b []byte) (int, error) {
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		if strings.Contains(l, "level=ERROR") || strings.Contains(l, "panic") {
			w.t.Log(w.prefix + l)
		}
	}
	return len(b), nil
}

// lab is a router and two nodes on one segment.
type lab struct {
	router *router.Config
	nodes  []*netnstest.Netns
	ips    []netip.Addr
}

const (
	routerASN = 65000
	nodeASN   = 64512
	password  = "weft-lab"
)

var routerIP = netip.MustParseAddr("10.99.0.1")

func newLab(t testing.TB, kind string, bfd time.Duration, mut ...func(*router.Config)) *lab {
	t.Helper()
	netnstest.RequireRoot(t)
	rc := &router.Config{Kind: kind, ASN: routerASN, RouterID: routerIP, Neighbors: netip.MustParsePrefix("10.99.0.0/24"),
		NeighborASN: nodeASN, Password: password, BFD: bfd,
		Peers: []netip.Addr{netip.MustParseAddr("10.99.0.11"), netip.MustParseAddr("10.99.0.12")}}
	for _, m := range mut {
		m(rc)
	}
	if err := rc.Validate(); err != nil {
		t.Fatalf("%v (make test-deps installs BIRD and FRR)", err)
	}
	sw := netnstest.NewSwitch(t)
	rns := netnstest.New(t, "rtr")
	sw.Plug(t, rns, "r", routerIP.String()+"/24")
	rc.Netns = rns.Name
	rc.Dir = filepath.Join(t.TempDir(), kind)
	if err := os.MkdirAll(rc.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(filepath.Dir(rc.Dir), 0o755)
	stop, err := rc.Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(rc.Logs(3000))
			if kind == "frr" {
				for _, cmd := range []string{"show bfd peers", "show bgp neighbors"} {
					out, _ := exec.Command("vtysh", "--vty_socket", rc.Dir, "-c", cmd).CombinedOutput()
					t.Logf("%s: %s", cmd, tail(string(out), 3000))
				}
			}
		}
	})
	l := &lab{router: rc}
	for i := 1; i <= 2; i++ {
		n := netnstest.New(t, fmt.Sprintf("n%d", i))
		ip := netip.MustParseAddr(fmt.Sprintf("10.99.0.%d", 10+i))
		sw.Plug(t, n, fmt.Sprintf("n%d", i), ip.String()+"/24")
		l.nodes, l.ips = append(l.nodes, n), append(l.ips, ip)
	}
	return l
}

func block(i int) netip.Prefix { return netip.MustParsePrefix(fmt.Sprintf("10.244.%d.0/24", i+1)) }

var serviceCIDR = netip.MustParsePrefix("10.96.0.0/16")

// config is node i's speaker configuration: its block and the Service range, to the router.
func (l *lab) config(i int, mut ...func(*bgp.Config)) bgp.Config {
	c := bgp.Config{ASN: nodeASN, RouterID: l.ips[i], ListenPort: 179, GracefulRestart: true, RestartTime: 120,
		Peers:    []bgp.Peer{{Name: "tor", Address: routerIP, ASN: routerASN, Password: password, HoldTime: 9, Keepalive: 3}},
		Prefixes: []netip.Prefix{block(i), serviceCIDR}, NextHop: l.ips[i], Communities: []string{"64512:100"}}
	for _, m := range mut {
		m(&c)
	}
	return c
}

func established(p bgp.PeerStatus) bool { return p.State == "Established" }

func forEachRouter(t *testing.T, f func(t *testing.T, kind string)) {
	for _, kind := range router.Kinds {
		t.Run(kind, func(t *testing.T) { f(t, kind) })
	}
}

func TestRouterLearnsEachNodesBlockAndTheServiceRange(t *testing.T) {
	forEachRouter(t, func(t *testing.T, kind string) {
		l := newLab(t, kind, 0)
		ctx := context.Background()
		var sp []*speaker
		for i := range l.nodes {
			s := startSpeaker(t, l.nodes[i])
			s.apply(l.config(i))
			sp = append(sp, s)
		}
		if err := l.router.WaitEstablished(ctx, l.ips, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		for i := range l.nodes {
			if err := l.router.WaitRoute(ctx, block(i), []netip.Addr{l.ips[i]}, 10*time.Second); err != nil {
				t.Fatal(err)
			}
			st := sp[i].waitPeer(routerIP, 10*time.Second, func(p bgp.PeerStatus) bool { return established(p) && p.PrefixesSent == 2 })
			if st.Since.IsZero() || st.Name != "tor" || st.ASN != routerASN {
				t.Errorf("node %d's session status: %+v", i, st)
			}
		}
		// Both nodes serve the Service range: the router spreads it over them.
		if err := l.router.WaitRoute(ctx, serviceCIDR, l.ips, 10*time.Second); err != nil {
			t.Fatal(err)
		}

		// Node 1 stops announcing the Service range and its block moves: the router follows.
		moved := netip.MustParsePrefix("10.244.9.0/24")
		sp[0].apply(l.config(0, func(c *bgp.Config) { c.Prefixes = []netip.Prefix{moved} }))
		if err := l.router.WaitRoute(ctx, block(0), nil, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := l.router.WaitRoute(ctx, moved, l.ips[:1], 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := l.router.WaitRoute(ctx, serviceCIDR, l.ips[1:], 5*time.Second); err != nil {
			t.Fatal(err)
		}
		// The node leaves: Withdraw takes everything back at once.
		if r := sp[0].call(request{Withdraw: true}); r.Error != "" {
			t.Fatal(r.Error)
		}
		if err := l.router.WaitRoute(ctx, moved, nil, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	})
}

// TestBFDDropsAFrozenSpeakersRoutesBeforeTheHoldTime freezes a speaker's process (SIGSTOP),
// as a node that hangs or loses power does: its TCP sessions stay open, so only BFD can
// tell the router before the 9 s hold time. (A killed process closes its sessions, which
// routers notice at once.) The test proves BFD is what drops the route (well before the
// hold time); how fast it does is `make bench` (BenchmarkBFDDetection), not a timed test.
func TestBFDDropsAFrozenSpeakersRoutesBeforeTheHoldTime(t *testing.T) {
	forEachRouter(t, func(t *testing.T, kind string) {
		l := newLab(t, kind, 100*time.Millisecond)
		s := startSpeaker(t, l.nodes[0])
		s.apply(l.config(0, withBFD))
		gone := freezeAndWait(t, l, s, true, 3*time.Second)
		t.Logf("%s dropped the frozen speaker's route after %v (BFD 100 ms × 3, hold time 9 s)", kind, gone.Round(time.Millisecond))
		// Thawed, the speaker comes back: BFD (with new discriminators on the router's
		// side) and the session, and the route with them.
		if err := s.cmd.Process.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		if err := l.router.WaitRoute(t.Context(), block(0), l.ips[:1], 30*time.Second); err != nil {
			t.Fatalf("after the speaker thawed: %v", err)
		}
		s.waitPeer(routerIP, 10*time.Second, func(p bgp.PeerStatus) bool { return established(p) && p.BFD == "Up" })
	})
}

// withBFD turns BFD on for the first peer at 100 ms × 3. (Graceful restart stays on, as by
// default: a frozen node's sessions do not close, so the routers do not wait for it.)
func withBFD(c *bgp.Config) {
	c.Peers[0].BFD = &bgp.BFD{Interval: 100 * time.Millisecond, Multiplier: 3}
}

// freezeAndWait waits for the speaker's route and sessions to be steady, freezes the
// speaker and returns how long the router took to drop its route, failing past limit.
// Steady means the route stayed for a whole second: on a loaded machine a 300 ms BFD
// detection can flap once while the processes start, which is not what is measured.
func freezeAndWait(t testing.TB, l *lab, s *speaker, bfd bool, limit time.Duration) time.Duration {
	t.Helper()
	ctx := context.Background()
	if err := l.router.WaitRoute(ctx, block(0), l.ips[:1], 30*time.Second); err != nil {
		t.Fatal(err)
	}
	s.waitPeer(routerIP, 30*time.Second, func(p bgp.PeerStatus) bool { return established(p) && (!bfd || p.BFD == "Up") })
	steadySince, deadline := time.Now(), time.Now().Add(30*time.Second)
	for time.Since(steadySince) < time.Second {
		if time.Now().After(deadline) {
			t.Fatalf("the route never stayed for a second in 30 s before the freeze")
		}
		routes, err := l.router.Routes(ctx)
		if err != nil || !router.HasRoute(routes, block(0), l.ips[:1]) {
			steadySince = time.Now()
		}
		time.Sleep(20 * time.Millisecond)
	}
	start := time.Now()
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if err := l.router.WaitRoute(ctx, block(0), nil, limit); err != nil {
		t.Fatalf("the frozen speaker's route is still there after %v (hold time 9 s): %v", limit, err)
	}
	return time.Since(start)
}

// TestKilledSpeakersRoutesGo kills a speaker's process with BFD on: its sessions
// close. Without graceful restart both routers drop the routes at once. With it (the
// default) they differ, and the test records how: BIRD ends its graceful-restart wait when
// BFD goes down (routes gone in about 3 × the interval); FRR's helper keeps them as stale for
// the restart time (docs/bgp.md).
func TestKilledSpeakersRoutesGo(t *testing.T) {
	forEachRouter(t, func(t *testing.T, kind string) {
		for _, gr := range []bool{false, true} {
			l := newLab(t, kind, 100*time.Millisecond)
			ctx := context.Background()
			s := startSpeaker(t, l.nodes[0])
			s.apply(l.config(0, func(c *bgp.Config) {
				c.Peers[0].BFD = &bgp.BFD{Interval: 100 * time.Millisecond, Multiplier: 3}
				c.GracefulRestart = gr
			}))
			if err := l.router.WaitRoute(ctx, block(0), l.ips[:1], 20*time.Second); err != nil {
				t.Fatal(err)
			}
			s.waitPeer(routerIP, 10*time.Second, func(p bgp.PeerStatus) bool { return established(p) && p.BFD == "Up" })
			time.Sleep(time.Second) // BFD and BGP settled
			start := time.Now()
			s.kill()
			err := l.router.WaitRoute(ctx, block(0), nil, 3*time.Second)
			gone := time.Since(start)
			switch {
			case !gr || kind == "bird":
				if err != nil {
					t.Errorf("graceful restart %v: the killed speaker's route is still there after %v: %v", gr, gone, err)
				}
				t.Logf("%s, graceful restart %v: route gone %v after the kill", kind, gr, gone.Round(time.Millisecond))
			default:
				if err == nil {
					t.Errorf("FRR dropped the route of a graceful-restart speaker after %v: its helper keeps them (docs say so)", gone)
				}
				t.Logf("%s, graceful restart %v: route kept as stale (helper)", kind, gr)
			}
		}
	})
}

// TestGracefulRestartKeepsRoutesAcrossASpeakerRestart kills a speaker and starts another one
// on the node, as an agent restart does: the router never loses the node's route.
func TestGracefulRestartKeepsRoutesAcrossASpeakerRestart(t *testing.T) {
	forEachRouter(t, func(t *testing.T, kind string) {
		l := newLab(t, kind, 0)
		ctx := context.Background()
		s := startSpeaker(t, l.nodes[0])
		s.apply(l.config(0))
		if err := l.router.WaitRoute(ctx, block(0), l.ips[:1], 20*time.Second); err != nil {
			t.Fatal(err)
		}
		s.waitPeer(routerIP, 10*time.Second, established)
		// Watch the router's table from before the kill until the new speaker is back.
		stop := l.router.WatchRoute(ctx, block(0), l.ips[:1], 10*time.Millisecond)
		s.kill()
		s2 := startSpeaker(t, l.nodes[0])
		s2.apply(l.config(0, func(c *bgp.Config) { c.Restarting = true }))
		s2.waitPeer(routerIP, 30*time.Second, func(p bgp.PeerStatus) bool { return established(p) && p.PrefixesSent == 2 })
		time.Sleep(2 * time.Second) // the router has the new speaker's End-of-RIB: stale routes are swept now
		lost, polls := stop()
		if lost != "" {
			t.Fatalf("the router lost %s during the restart at %s", block(0), lost)
		}
		if polls < 10 {
			t.Fatalf("only %d polls of the router's table", polls)
		}
		if err := l.router.WaitRoute(ctx, block(0), l.ips[:1], time.Second); err != nil {
			t.Fatal(err)
		}
	})
}

// TestBadPeersAreReportedAndOthersKeepWorking: a wrong ASN, a wrong password and an
// unreachable address each show in their peer's status; the good session stays up.
func TestBadPeersAreReportedAndOthersKeepWorking(t *testing.T) {
	forEachRouter(t, func(t *testing.T, kind string) {
		l := newLab(t, kind, 0)
		ctx := context.Background()
		good := startSpeaker(t, l.nodes[1])
		good.apply(l.config(1))
		if err := l.router.WaitRoute(ctx, block(1), l.ips[1:], 20*time.Second); err != nil {
			t.Fatal(err)
		}
		bad := startSpeaker(t, l.nodes[0])
		unreachable := netip.MustParseAddr("10.99.0.99")
		bad.apply(l.config(0, func(c *bgp.Config) {
			c.Peers[0].ASN = routerASN + 1
			c.Peers = append(c.Peers, bgp.Peer{Name: "gone", Address: unreachable, ASN: 65010},
				bgp.Peer{Name: "nosecret", Address: netip.MustParseAddr("10.99.0.98"), ASN: 65011, Error: `Secret weft-system/bgp-password not found`})
		}))
		st := bad.waitPeer(routerIP, 20*time.Second, func(p bgp.PeerStatus) bool { return strings.Contains(p.LastError, "bad peer AS") })
		t.Logf("wrong ASN: %+v", st)
		if established(st) {
			t.Errorf("wrong ASN: the session came up: %+v", st)
		}
		for _, p := range bad.status() {
			switch p.Name {
			case "gone":
				if established(p) {
					t.Errorf("unreachable peer: %+v", p)
				}
			case "nosecret":
				if p.State != "Idle" || !strings.Contains(p.LastError, "not found") {
					t.Errorf("peer without its Secret: %+v", p)
				}
			}
		}
		// Wrong password: the router never answers (TCP MD5).
		bad.apply(l.config(0, func(c *bgp.Config) { c.Peers[0].Password = "wrong" }))
		time.Sleep(3 * time.Second)
		for _, p := range bad.status() {
			if p.Address == routerIP && established(p) {
				t.Errorf("wrong password: the session came up: %+v", p)
			}
		}
		if err := l.router.WaitRoute(ctx, block(0), nil, time.Second); err != nil {
			t.Error(err)
		}
		// The good node was never disturbed.
		if err := l.router.WaitRoute(ctx, block(1), l.ips[1:], time.Second); err != nil {
			t.Error(err)
		}
		good.waitPeer(routerIP, time.Second, established)
		// Fixed: it comes up.
		bad.apply(l.config(0))
		if err := l.router.WaitRoute(ctx, block(0), l.ips[:1], 20*time.Second); err != nil {
			t.Fatal(err)
		}
	})
}

// TestImportFilterRefusesWhatRoutersMustNotSend: BIRD and FRR announce a default route, the
// metadata address, this cluster's service range and one prefix of their own; of what the
// node's speaker receives, the import filter keeps only the last (the agent installs only
// what it keeps) and says why, for the session's status (importRefused); past the peer's
// maxPrefixes it keeps nothing and says so.
func TestImportFilterRefusesWhatRoutersMustNotSend(t *testing.T) {
	forEachRouter(t, func(t *testing.T, kind string) {
		legit := netip.MustParsePrefix("198.51.100.0/24")
		hostile := []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("169.254.169.254/32"), serviceCIDR}
		l := newLab(t, kind, 0, func(rc *router.Config) { rc.Originate = append([]netip.Prefix{legit}, hostile...) })
		s := startSpeaker(t, l.nodes[0])
		// (The node announces only its block here: it would prefer its own route to the
		// service range over the router's.)
		s.apply(l.config(0, func(c *bgp.Config) { c.Prefixes = []netip.Prefix{block(0)} }))
		var routes []bgp.Route
		deadline := time.Now().Add(30 * time.Second)
		for len(routes) < 1+len(hostile) {
			if time.Now().After(deadline) {
				t.Fatalf("the speaker received %v from %s, want %d routes", routes, kind, 1+len(hostile))
			}
			time.Sleep(200 * time.Millisecond)
			r := s.call(request{Received: true})
			if r.Error != "" {
				t.Fatal(r.Error)
			}
			routes = r.Routes
		}
		f := bgp.ImportFilter{Own: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}, Services: []netip.Prefix{serviceCIDR}, Nodes: l.ips}
		kept, refused := f.Filter(routes)
		if len(kept) != 1 || kept[0].Prefix != legit || kept[0].NextHop != routerIP {
			t.Errorf("kept %v, want only %s via %s", kept, legit, routerIP)
		}
		if want := fmt.Sprintf("%d prefixes not imported, such as 0.0.0.0/0 is a default route", len(hostile)); refused[routerIP] != want {
			t.Errorf("the session says %q, want %q", refused[routerIP], want)
		}
		t.Logf("%s: %s", kind, refused[routerIP])

		f.MaxPrefixes = map[netip.Addr]int{routerIP: len(hostile)}
		kept, refused = f.Filter(routes)
		if len(kept) != 0 || !strings.Contains(refused[routerIP], "more than maxPrefixes 3: none imported") {
			t.Errorf("past maxPrefixes: kept %v, said %q", kept, refused[routerIP])
		}
	})
}
