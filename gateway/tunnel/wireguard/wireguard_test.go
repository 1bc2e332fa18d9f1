package wireguard_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/weft-net/weft/gateway/tunnel"
	"github.com/weft-net/weft/gateway/tunnel/wireguard"
	"github.com/weft-net/weft/internal/netnstest"
)

// The tests run each tunnel end in its own process started inside a network namespace (the
// test binary again, as a helper): a WireGuard device opens its sockets from its own
// goroutines, so the whole process must live in the namespace, as weft-gateway does on a node.
const helperEnv = "WEFT_WIREGUARD_TEST_HELPER"

func TestMain(m *testing.M) {
	if cfg := os.Getenv(helperEnv); cfg != "" {
		if err := helper(cfg, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type request struct {
	Op    string        `json:"op"` // peers, status, ports, up, stage, commit
	Peers []tunnel.Peer `json:"peers,omitempty"`
	ID    string        `json:"id,omitempty"` // stage
	At    time.Time     `json:"at,omitempty"` // stage
}

type reply struct {
	Error     string              `json:"error,omitempty"`
	PublicKey string              `json:"publicKey,omitempty"`
	Mode      string              `json:"mode,omitempty"`
	Status    []tunnel.PeerStatus `json:"status,omitempty"`
	Ports     map[string]int      `json:"ports,omitempty"`
	Staged    tunnel.Rotation     `json:"staged,omitempty"`
}

// helper brings a tunnel up, answers requests line by line, and closes it at end of input.
func helper(cfgJSON string, in io.Reader, out io.Writer) error {
	var cfg tunnel.Config
	if err := json.Unmarshal([]byte(cfgJSON), &cfg); err != nil {
		return err
	}
	reg := tunnel.NewRegistry()
	if err := wireguard.Register(reg); err != nil {
		return err
	}
	t, err := reg.New(wireguard.Name, cfg)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(out)
	if err := t.Up(context.Background()); err != nil {
		return enc.Encode(reply{Error: err.Error()})
	}
	defer t.Close()
	if err := enc.Encode(reply{PublicKey: t.PublicKey(), Mode: t.Mode()}); err != nil {
		return err
	}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		var req request
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			return err
		}
		var r reply
		switch req.Op {
		case "peers":
			if err := t.SetPeers(context.Background(), req.Peers); err != nil {
				r.Error = err.Error()
			}
		case "status":
			st, err := t.Status(context.Background())
			r.Status = st
			if err != nil {
				r.Error = err.Error()
			}
		case "ports":
			r.Ports = t.PeerPorts()
		case "stage":
			rot := t.(tunnel.KeyRotator)
			if err := rot.StageKey(req.ID, req.At); err != nil {
				r.Error = err.Error()
			}
			r.Staged, _ = rot.Staged()
		case "commit":
			if err := t.(tunnel.KeyRotator).CommitKey(context.Background()); err != nil {
				r.Error = err.Error()
			}
			r.PublicKey = t.PublicKey()
		case "up":
			if err := t.Up(context.Background()); err != nil {
				r.Error = err.Error()
			}
		default:
			r.Error = "unknown op " + req.Op
		}
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	return nil
}

// end is one tunnel end: a namespace on the underlay and a helper process in it.
type end struct {
	t       testing.TB
	ns      *netnstest.Netns
	ip      netip.Addr
	iface   string
	port    int
	address netip.Prefix
	key     string
	mode    string
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	replies *json.Decoder
}

func newEnd(t testing.TB, sw *netnstest.Switch, name, ip string, port int, address string) *end {
	t.Helper()
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	e := &end{t: t, ns: netnstest.New(t, name), ip: netip.MustParseAddr(ip), port: port,
		iface: "wgt" + hex.EncodeToString(b), address: netip.MustParsePrefix(address)}
	sw.Plug(t, e.ns, "p"+name, ip+"/24")
	cfg, _ := json.Marshal(tunnel.Config{Interface: e.iface, ListenPort: port, Address: e.address, StateDir: t.TempDir()})
	e.cmd = exec.Command("nsenter", "--net="+e.ns.Path(), "--", os.Args[0], "-test.run=^$")
	e.cmd.Env = append(os.Environ(), helperEnv+"="+string(cfg))
	e.cmd.Stderr = os.Stderr
	var err error
	if e.stdin, err = e.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := e.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := e.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.stop)
	e.replies = json.NewDecoder(stdout)
	var r reply
	if err := e.replies.Decode(&r); err != nil || r.Error != "" {
		t.Fatalf("%s: tunnel up: %v %s", name, err, r.Error)
	}
	e.key, e.mode = r.PublicKey, r.Mode
	return e
}

func (e *end) stop() {
	if e.cmd == nil {
		return
	}
	_ = e.stdin.Close()
	done := make(chan struct{})
	go func() { _ = e.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = e.cmd.Process.Kill()
		<-done
	}
	e.cmd = nil
}

func (e *end) do(req request) reply {
	e.t.Helper()
	data, _ := json.Marshal(req)
	if _, err := e.stdin.Write(append(data, '\n')); err != nil {
		e.t.Fatal(err)
	}
	var r reply
	if err := e.replies.Decode(&r); err != nil {
		e.t.Fatalf("%s: %v", req.Op, err)
	}
	return r
}

func (e *end) setPeers(peers ...tunnel.Peer) {
	e.t.Helper()
	if r := e.do(request{Op: "peers", Peers: peers}); r.Error != "" {
		e.t.Fatal(r.Error)
	}
}

func (e *end) peer(prefixes ...string) tunnel.Peer {
	p := tunnel.Peer{Name: e.iface, PublicKey: e.key, Endpoint: netip.AddrPortFrom(e.ip, uint16(e.port))}
	for _, s := range prefixes {
		p.Prefixes = append(p.Prefixes, netip.MustParsePrefix(s))
	}
	return p
}

// routes lists the routes the tunnel installed.
func (e *end) routes() string {
	out, _ := e.ns.Run("ip", "route", "show", "proto", "0x57")
	return strings.TrimSpace(out)
}

// status reads the tunnel's peers.
func (e *end) status() []tunnel.PeerStatus {
	e.t.Helper()
	r := e.do(request{Op: "status"})
	if r.Error != "" {
		e.t.Fatal(r.Error)
	}
	return r.Status
}

// peerStatus is the status of the named peer.
func (e *end) peerStatus(name string) tunnel.PeerStatus {
	e.t.Helper()
	for _, s := range e.status() {
		if s.Name == name {
			return s
		}
	}
	e.t.Fatalf("%s has no peer %s", e.iface, name)
	return tunnel.PeerStatus{}
}

// devices lists the end's WireGuard and TUN links.
func (e *end) devices() string {
	out, _ := e.ns.Run("ip", "-o", "link", "show")
	var names []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], "wgt") {
			names = append(names, strings.TrimSuffix(f[1], ":"))
		}
	}
	return strings.Join(names, " ")
}

func TestTunnelCarriesTrafficBothWays(t *testing.T) {
	netnstest.RequireRoot(t)
	sw := netnstest.NewSwitch(t)
	a := newEnd(t, sw, "wga", "172.29.8.11", 51820, "10.200.1.1/32")
	b := newEnd(t, sw, "wgb", "172.29.8.12", 51820, "10.200.2.1/32")
	t.Logf("tunnel mode: %s", a.mode)
	a.setPeers(b.peer("10.200.2.0/24", "10.201.2.0/24"))
	b.setPeers(a.peer("10.200.1.0/24"))

	if err := a.ns.Ping("10.200.2.1", 2); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		server, client *netnstest.Netns
		addr           string
	}{{b.ns, a.ns, "10.200.2.1:5400"}, {a.ns, b.ns, "10.200.1.1:5400"}} {
		if err := netnstest.TransferTCP(c.server, c.client, c.addr, 8<<20); err != nil {
			t.Fatal(err)
		}
	}
	if r := a.do(request{Op: "status"}); r.Error != "" || len(r.Status) != 1 || r.Status[0].LastHandshake.IsZero() ||
		r.Status[0].TxBytes < 8<<20 || r.Status[0].PublicKey != b.key || r.Status[0].Endpoint != netip.MustParseAddrPort("172.29.8.12:51820") {
		t.Errorf("status of a: %+v (error %q), want one peer (b) with a handshake and at least 8 MiB sent", r.Status, r.Error)
	}
	if got := a.routes(); !strings.Contains(got, "10.200.2.0/24") || !strings.Contains(got, "10.201.2.0/24") {
		t.Errorf("routes into the tunnel on a: %q", got)
	}

	t.Run("Up again changes nothing", func(t *testing.T) {
		if r := a.do(request{Op: "up"}); r.Error != "" {
			t.Fatal(r.Error)
		}
		if err := a.ns.Ping("10.200.2.1", 1); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("SetPeers removes routes no peer has any more", func(t *testing.T) {
		a.setPeers(b.peer("10.200.2.0/24"))
		if got := a.routes(); strings.Contains(got, "10.201.2.0/24") || !strings.Contains(got, "10.200.2.0/24") {
			t.Errorf("routes into the tunnel on a: %q", got)
		}
	})

	t.Run("a peer with the wrong key gets nothing through", func(t *testing.T) {
		wrong, _ := wgtypes.GeneratePrivateKey()
		p := a.peer("10.200.1.0/24")
		p.PublicKey = wrong.PublicKey().String()
		b.setPeers(p)
		if err := a.ns.Ping("10.200.2.1", 2); err == nil {
			t.Error("traffic passed with a key the other side does not hold")
		}
		b.setPeers(a.peer("10.200.1.0/24"))
		if err := a.ns.PingUntil("10.200.2.1", 10*time.Second); err != nil {
			t.Fatalf("traffic did not resume with the right key: %v", err)
		}
	})

	t.Run("bad peers are refused with a clear error", func(t *testing.T) {
		p := b.peer("10.200.2.0/24")
		p.PublicKey = "not-a-key"
		if r := a.do(request{Op: "peers", Peers: []tunnel.Peer{p}}); !strings.Contains(r.Error, "public key") {
			t.Errorf("error %q does not mention the public key", r.Error)
		}
		dup := b.peer("10.200.2.0/24")
		if r := a.do(request{Op: "peers", Peers: []tunnel.Peer{dup, dup}}); !strings.Contains(r.Error, "unique") {
			t.Errorf("error %q does not say peer names must be unique", r.Error)
		}
		a.setPeers(b.peer("10.200.2.0/24"))
	})

	t.Run("each peer has its own device and port; a shared range is spread over both", func(t *testing.T) {
		// b and c stand for two gateways of one cluster: both answer 10.200.9.1 and send
		// from it; a must take flows from either and spread its own over both.
		c := newEnd(t, sw, "wgc", "172.29.8.13", 51820, "10.200.9.1/32")
		if out, err := b.ns.Run("ip", "addr", "add", "10.200.9.1/32", "dev", b.peerStatus(a.iface).Device); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if out, err := a.ns.Run("sysctl", "-qw", "net.ipv4.fib_multipath_hash_policy=1"); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		a.setPeers(b.peer("10.200.2.0/24", "10.200.9.0/24"), c.peer("10.200.9.0/24"))
		ports := a.do(request{Op: "ports"}).Ports
		if ports[b.iface] != 51820 || ports[c.iface] != 51821 {
			t.Errorf("ports of a's devices: %v, want %s on 51820 and %s on 51821", ports, b.iface, c.iface)
		}
		// c sends to the port a gave it.
		atC := a.peer("10.200.1.0/24")
		atC.Endpoint = netip.AddrPortFrom(a.ip, uint16(ports[c.iface]))
		c.setPeers(atC)
		if got := strings.Fields(a.devices()); len(got) != 2 {
			t.Errorf("a's devices: %v, want one per peer", got)
		}
		if out, _ := a.ns.Run("ip", "route", "show", "10.200.9.0/24"); strings.Count(out, "nexthop") != 2 {
			t.Errorf("route to the shared range:\n%s\nwant two next hops", out)
		}
		// Either gateway of the peer cluster may send anything from its ranges.
		sink, err := a.ns.ListenUDP("10.200.1.1:9999")
		if err != nil {
			t.Fatal(err)
		}
		defer sink.Close()
		for i, src := range []*end{b, c} {
			if err := src.ns.SendUDPFlows(netip.MustParseAddrPort(fmt.Sprintf("10.200.9.1:%d", 30000+i*100)), netip.MustParseAddrPort("10.200.1.1:9999"), 4); err != nil {
				t.Fatal(err)
			}
		}
		if got := byFlowGroup(netnstest.ReceiveUDP(sink, 8, 3*time.Second)); got[30000] != 4 || got[30100] != 4 {
			t.Errorf("datagrams a received from 10.200.9.1 by first source port: %v, want 4 through b (30000) and 4 through c (30100)", got)
		}
		// a spreads its flows to the shared range over both.
		bRx, cRx := b.peerStatus(a.iface).RxBytes, c.peerStatus(a.iface).RxBytes
		if err := a.ns.SendUDPFlows(netip.AddrPortFrom(netip.Addr{}, 20000), netip.MustParseAddrPort("10.200.9.1:9"), 32); err != nil {
			t.Fatal(err)
		}
		var db, dc int64
		deadline := time.Now().Add(3 * time.Second)
		for (db == 0 || dc == 0) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
			db, dc = b.peerStatus(a.iface).RxBytes-bRx, c.peerStatus(a.iface).RxBytes-cRx
		}
		t.Logf("32 flows: %d bytes into b, %d into c", db, dc)
		if db == 0 || dc == 0 {
			t.Errorf("32 flows: %d bytes into b, %d into c; want both used", db, dc)
		}

		standby := c.peer("10.200.9.0/24")
		standby.Standby = true
		a.setPeers(b.peer("10.200.2.0/24", "10.200.9.0/24"), standby)
		if out, _ := a.ns.Run("ip", "route", "show", "10.200.9.0/24"); strings.Contains(out, "nexthop") {
			t.Errorf("route to the shared range with c standing by:\n%s\nwant b's device only", out)
		}
		if err := c.ns.SendUDPFlows(netip.MustParseAddrPort("10.200.9.1:30200"), netip.MustParseAddrPort("10.200.1.1:9999"), 4); err != nil {
			t.Fatal(err)
		}
		if got := byFlowGroup(netnstest.ReceiveUDP(sink, 4, 3*time.Second)); got[30200] != 4 {
			t.Errorf("datagrams a received from the standby c: %v, want 4", got)
		}

		a.setPeers(b.peer("10.200.2.0/24"))
		if got := strings.Fields(a.devices()); len(got) != 1 {
			t.Errorf("a's devices after c left: %v, want one", got)
		}
		if ports := a.do(request{Op: "ports"}).Ports; len(ports) != 1 || ports[b.iface] != 51820 {
			t.Errorf("ports after c left: %v", ports)
		}
	})

	t.Run("closing removes the devices", func(t *testing.T) {
		a.stop()
		if got := a.devices(); got != "" {
			t.Errorf("devices left after the tunnel closed: %s", got)
		}
	})
}

func TestKeyStaysOnTheNode(t *testing.T) {
	dir := t.TempDir()
	first, err := wireguard.New(tunnel.Config{Interface: "wgk0", StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	again, err := wireguard.New(tunnel.Config{Interface: "wgk0", StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if first.PublicKey() != again.PublicKey() {
		t.Error("the key changed between runs")
	}
	fi, err := os.Stat(filepath.Join(dir, "wgk0.key"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	if err := os.WriteFile(filepath.Join(dir, "wgk1.key"), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := wireguard.New(tunnel.Config{Interface: "wgk1", StateDir: dir}); err == nil || !strings.Contains(err.Error(), "does not hold a key") {
		t.Errorf("a corrupt key file: %v", err)
	}
	if _, err := wireguard.New(tunnel.Config{Interface: "wgk2"}); err == nil {
		t.Error("no state directory was accepted")
	}
}

// byFlowGroup counts datagrams by source port, each sender's flows under its first port
// (senders' ports are grouped by hundreds).
func byFlowGroup(from []netip.AddrPort) map[int]int {
	got := map[int]int{}
	for _, f := range from {
		got[int(f.Port())/100*100]++
	}
	return got
}

func TestKeyRotationKeepsTrafficFlowing(t *testing.T) {
	netnstest.RequireRoot(t)
	sw := netnstest.NewSwitch(t)
	a := newEnd(t, sw, "wgra", "172.29.9.11", 51820, "10.200.1.1/32")
	b := newEnd(t, sw, "wgrb", "172.29.9.12", 51820, "10.200.2.1/32")
	a.setPeers(b.peer("10.200.2.0/24"))
	b.setPeers(a.peer("10.200.1.0/24"))
	if err := a.ns.PingUntil("10.200.2.1", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	for round := 1; round <= 3; round++ {
		old := a.key
		at := time.Now().Add(1500 * time.Millisecond)
		r := a.do(request{Op: "stage", ID: fmt.Sprintf("r%d", round), At: at})
		if r.Error != "" || r.Staged.PublicKey == "" || r.Staged.PublicKey == old || !r.Staged.At.Equal(at) {
			t.Fatalf("staging: %+v", r)
		}
		next := r.Staged.PublicKey
		// A steady stream from a to b while both switch at the agreed moment: a commits
		// its key, b replaces a's key with the next one.
		gap := probeGap(t, a.ns, b.ns, "10.200.2.1:9998", at.Add(-time.Second), at.Add(2*time.Second), func() {
			time.Sleep(time.Until(at))
			done := make(chan reply, 1)
			go func() { done <- a.do(request{Op: "commit"}) }()
			p := a.peer("10.200.1.0/24")
			p.PublicKey = next
			b.setPeers(p)
			if r := <-done; r.Error != "" || r.PublicKey != next {
				t.Errorf("commit: %+v, want the staged key %s", r, next)
			}
		})
		t.Logf("round %d: longest gap in a 5 ms probe stream across the key switch: %s", round, gap)
		if gap >= time.Second {
			t.Errorf("round %d: the key switch interrupted traffic for %s, want < 1s", round, gap)
		}
		a.key = next
		if st := b.peerStatus(a.iface); st.PublicKey != next || st.LastHandshake.Before(at.Add(-time.Second)) {
			t.Errorf("b's view of a after the switch: key %s handshake %s, want %s and a fresh handshake", st.PublicKey, st.LastHandshake, next)
		}
		if r := a.do(request{Op: "stage", ID: fmt.Sprintf("r%d", round), At: time.Now().Add(time.Hour)}); r.Staged.PublicKey != "" {
			t.Errorf("rotation r%d was staged again after it was done: %+v", round, r.Staged)
		}
	}
}

// probeGap sends a datagram every 5 ms from one namespace to addr in another between from
// and until, runs during() meanwhile, and returns the longest time without a datagram
// arriving (from the first to the last that arrived, and to until if the stream stopped).
func probeGap(t *testing.T, src, dst *netnstest.Netns, addr string, from, until time.Time, during func()) time.Duration {
	t.Helper()
	sink, err := dst.ListenUDP(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	var conn net.Conn
	if err := src.Do(func() error {
		var err error
		conn, err = net.Dial("udp4", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	arrivals := make(chan []time.Time, 1)
	go func() {
		var got []time.Time
		buf := make([]byte, 64)
		for {
			_ = sink.SetReadDeadline(until.Add(200 * time.Millisecond))
			if _, err := sink.Read(buf); err != nil {
				break
			}
			got = append(got, time.Now())
		}
		arrivals <- got
	}()
	go func() {
		time.Sleep(time.Until(from))
		for now := time.Now(); now.Before(until); now = time.Now() {
			_, _ = conn.Write([]byte("probe"))
			time.Sleep(5 * time.Millisecond)
		}
	}()
	during()
	got := <-arrivals
	if len(got) == 0 {
		t.Fatal("no probe arrived")
	}
	gap := got[0].Sub(from)
	for i := 1; i < len(got); i++ {
		gap = max(gap, got[i].Sub(got[i-1]))
	}
	return max(gap, until.Sub(got[len(got)-1]))
}

func TestStagedRotationSurvivesRestarts(t *testing.T) {
	dir := t.TempDir()
	cfg := tunnel.Config{Interface: "wgr0", StateDir: dir}
	first, err := wireguard.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Now().Add(300 * time.Millisecond)
	if err := first.StageKey("r1", at); err != nil {
		t.Fatal(err)
	}
	staged, ok := first.Staged()
	if !ok || staged.ID != "r1" || staged.PublicKey == first.PublicKey() {
		t.Fatalf("staged: %+v %v", staged, ok)
	}
	if err := first.StageKey("r1", at.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if again, _ := first.Staged(); again != staged {
		t.Errorf("staging r1 twice made a new rotation: %+v, want %+v", again, staged)
	}
	before, err := wireguard.New(cfg) // a restart before the switch keeps both keys
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := before.Staged(); !ok || got.PublicKey != staged.PublicKey || before.PublicKey() != first.PublicKey() {
		t.Errorf("restart before the switch: key %s staged %+v, want %s and %+v", before.PublicKey(), got, first.PublicKey(), staged)
	}
	time.Sleep(time.Until(at) + 50*time.Millisecond)
	after, err := wireguard.New(cfg) // a restart after it takes the new key: the peers have
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := after.Staged(); ok || after.PublicKey() != staged.PublicKey || after.LastRotation() != "r1" {
		t.Errorf("restart after the switch: key %s, last rotation %q, still staged %v; want %s, r1, none", after.PublicKey(), after.LastRotation(), ok, staged.PublicKey)
	}
	if err := after.StageKey("r1", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, ok := after.Staged(); ok {
		t.Error("the committed rotation r1 was staged again")
	}
	if err := after.StageKey("", time.Now()); err == nil {
		t.Error("a rotation without a name was accepted")
	}
	if fi, err := os.Stat(filepath.Join(dir, "wgr0.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file after rotation: %v %v, want mode 0600", fi, err)
	}
}
