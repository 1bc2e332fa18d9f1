// Package tunneltest runs tunnel driver ends for tests: each end is a helper process (the
// test binary again) started inside its own network namespace on a test switch, driven
// line by line over its stdin and stdout. Drivers that open sockets and devices from their
// own goroutines (userspace WireGuard, userspace Geneve) need the whole process in the
// namespace, as weft-gateway is on a node.
package tunneltest

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/weft-net/weft/gateway/tunnel"
	"github.com/weft-net/weft/internal/health"
	"github.com/weft-net/weft/internal/netnstest"
)

const helperEnv = "WEFT_TUNNEL_TEST_HELPER"

// RunHelper must be called first in the test binary's TestMain: in a helper process it runs
// the named driver's tunnel (registered by register) and exits.
func RunHelper(driver string, register func(*tunnel.Registry) error) {
	cfg := os.Getenv(helperEnv)
	if cfg == "" {
		return
	}
	if err := helper(driver, register, cfg, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// Request is one operation on a helper's tunnel.
type Request struct {
	Op    string         `json:"op"` // peers, status, ports, up, stage, commit, probe
	Peers []tunnel.Peer  `json:"peers,omitempty"`
	ID    string         `json:"id,omitempty"`    // stage
	At    time.Time      `json:"at,omitempty"`    // stage
	Probe netip.AddrPort `json:"probe,omitempty"` // probe: a health responder, through Peers[0]'s device
}

// Reply is what the helper answers.
type Reply struct {
	Error     string              `json:"error,omitempty"`
	PublicKey string              `json:"publicKey,omitempty"`
	Mode      string              `json:"mode,omitempty"`
	Status    []tunnel.PeerStatus `json:"status,omitempty"`
	Ports     map[string]int      `json:"ports,omitempty"`
	Staged    tunnel.Rotation     `json:"staged,omitempty"`
	Probed    health.Status       `json:"probed,omitempty"`
}

// helper brings a tunnel up, answers requests line by line, and closes it at end of input.
func helper(driver string, register func(*tunnel.Registry) error, cfgJSON string, in io.Reader, out io.Writer) error {
	var cfg tunnel.Config
	if err := json.Unmarshal([]byte(cfgJSON), &cfg); err != nil {
		return err
	}
	reg := tunnel.NewRegistry()
	if err := register(reg); err != nil {
		return err
	}
	t, err := reg.New(driver, cfg)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(out)
	if err := t.Up(context.Background()); err != nil {
		return enc.Encode(Reply{Error: err.Error()})
	}
	defer t.Close()
	// Each end answers health probes, as weft-gateway does.
	rconn, err := net.ListenPacket("udp4", netip.AddrPortFrom(cfg.LocalIP, health.DefaultPort).String())
	if err != nil {
		return enc.Encode(Reply{Error: err.Error()})
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = health.Respond(ctx, rconn, nil) }()
	if err := enc.Encode(Reply{PublicKey: t.PublicKey(), Mode: t.Mode()}); err != nil {
		return err
	}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		var req Request
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			return err
		}
		var r Reply
		var err error
		switch req.Op {
		case "peers":
			err = t.SetPeers(context.Background(), req.Peers)
		case "status":
			r.Status, err = t.Status(context.Background())
		case "ports":
			r.Ports = t.PeerPorts()
		case "up":
			err = t.Up(context.Background())
		case "stage":
			rot, ok := t.(tunnel.KeyRotator)
			if !ok {
				err = fmt.Errorf("%s has no keys", driver)
				break
			}
			err = rot.StageKey(req.ID, req.At)
			r.Staged, _ = rot.Staged()
		case "commit":
			rot, ok := t.(tunnel.KeyRotator)
			if !ok {
				err = fmt.Errorf("%s has no keys", driver)
				break
			}
			err = rot.CommitKey(context.Background())
			r.PublicKey = t.PublicKey()
		case "probe":
			r.Probed, err = probeThrough(ctx, t, cfg.LocalIP, req)
		default:
			err = fmt.Errorf("unknown op %s", req.Op)
		}
		if err != nil {
			r.Error = err.Error()
		}
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	return nil
}

// probeThrough runs a health prober from this end's address to req.Probe through
// Peers[0]'s device for a second, as weft-gateway probes peer gateways, and returns what it
// saw.
func probeThrough(ctx context.Context, t tunnel.Tunnel, local netip.Addr, req Request) (health.Status, error) {
	devs, ok := t.(tunnel.PerPeerDevices)
	if !ok || len(req.Peers) != 1 {
		return health.Status{}, errors.New("probe: needs a driver with a device per peer, and one peer")
	}
	conn, err := net.ListenPacket("udp4", netip.AddrPortFrom(local, 0).String())
	if err != nil {
		return health.Status{}, err
	}
	p := health.NewProber(conn, health.Options{})
	p.SetTargets([]health.Target{{Addr: req.Probe, Via: devs.PeerDevice(req.Peers[0].Name)}})
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := p.Run(pctx); err != nil {
		return health.Status{}, err
	}
	return p.Status()[0], nil
}

// End is one tunnel end: a namespace on the switch and a helper process in it.
type End struct {
	t       testing.TB
	NS      *netnstest.Netns
	IP      netip.Addr
	Iface   string // the tunnel's interface name (a random one, starting with "tt")
	Port    int
	Key     string // the public key, for drivers with keys
	Mode    string
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	replies *json.Decoder
}

// NewEnd plugs a new namespace into the switch at ip (a /24) and starts the driver's tunnel
// in it with the given port and tunnel address.
func NewEnd(t testing.TB, sw *netnstest.Switch, name, ip string, port int, address string) *End {
	t.Helper()
	return NewEndWith(t, sw, name, ip, port, address, nil)
}

// NewEndWith is NewEnd with the tunnel's configuration changed by with (nil: as is).
func NewEndWith(t testing.TB, sw *netnstest.Switch, name, ip string, port int, address string, with func(*tunnel.Config)) *End {
	t.Helper()
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	e := &End{t: t, NS: netnstest.New(t, name), IP: netip.MustParseAddr(ip), Port: port, Iface: "tt" + hex.EncodeToString(b)}
	sw.Plug(t, e.NS, "p"+name, ip+"/24")
	// As weft-gateway sets it (the tunnel's address lets in what comes from elsewhere).
	if out, err := e.NS.Run("sysctl", "-qw", "net.ipv4.conf.all.rp_filter=2"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	c := tunnel.Config{Name: name, Interface: e.Iface, ListenPort: port, Address: netip.MustParsePrefix(address),
		LocalIP: e.IP, StateDir: t.TempDir()}
	if with != nil {
		with(&c)
	}
	cfg, _ := json.Marshal(c)
	e.cmd = exec.Command("nsenter", "--net="+e.NS.Path(), "--", os.Args[0], "-test.run=^$")
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
	t.Cleanup(e.Stop)
	e.replies = json.NewDecoder(stdout)
	var r Reply
	if err := e.replies.Decode(&r); err != nil || r.Error != "" {
		t.Fatalf("%s: tunnel up: %v %s", name, err, r.Error)
	}
	e.Key, e.Mode = r.PublicKey, r.Mode
	return e
}

// Stop closes the tunnel and waits for the helper (killing it after 10 s).
func (e *End) Stop() {
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

// Do sends a request and returns the reply.
func (e *End) Do(req Request) Reply {
	e.t.Helper()
	data, _ := json.Marshal(req)
	if _, err := e.stdin.Write(append(data, '\n')); err != nil {
		e.t.Fatal(err)
	}
	var r Reply
	if err := e.replies.Decode(&r); err != nil {
		e.t.Fatalf("%s: %v", req.Op, err)
	}
	return r
}

// SetPeers sets the tunnel's peers; an error fails the test.
func (e *End) SetPeers(peers ...tunnel.Peer) {
	e.t.Helper()
	if r := e.Do(Request{Op: "peers", Peers: peers}); r.Error != "" {
		e.t.Fatal(r.Error)
	}
}

// Peer is this end as another end's peer, carrying the prefixes.
func (e *End) Peer(prefixes ...string) tunnel.Peer {
	p := tunnel.Peer{Name: e.Iface, PublicKey: e.Key, Endpoint: netip.AddrPortFrom(e.IP, uint16(e.Port))}
	for _, s := range prefixes {
		p.Prefixes = append(p.Prefixes, netip.MustParsePrefix(s))
	}
	return p
}

// ProbeThrough probes peer's health responder for a second through e's device for peer,
// as weft-gateway does, and says whether the prober saw it up at the end.
func (e *End) ProbeThrough(peer *End) health.Status {
	e.t.Helper()
	r := e.Do(Request{Op: "probe", Peers: []tunnel.Peer{{Name: peer.Iface}}, Probe: netip.AddrPortFrom(peer.IP, health.DefaultPort)})
	if r.Error != "" {
		e.t.Fatal(r.Error)
	}
	return r.Probed
}

// Routes lists the routes the tunnel installed.
func (e *End) Routes() string {
	out, _ := e.NS.Run("ip", "route", "show", "proto", "0x57")
	return strings.TrimSpace(out)
}

// Status reads the tunnel's peers; an error fails the test.
func (e *End) Status() []tunnel.PeerStatus {
	e.t.Helper()
	r := e.Do(Request{Op: "status"})
	if r.Error != "" {
		e.t.Fatal(r.Error)
	}
	return r.Status
}

// PeerStatus is the status of the named peer.
func (e *End) PeerStatus(name string) tunnel.PeerStatus {
	e.t.Helper()
	for _, s := range e.Status() {
		if s.Name == name {
			return s
		}
	}
	e.t.Fatalf("%s has no peer %s", e.Iface, name)
	return tunnel.PeerStatus{}
}

// Devices lists the end's links whose names start with prefix.
func (e *End) Devices(prefix string) string {
	out, _ := e.NS.Run("ip", "-o", "link", "show")
	var names []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], prefix) {
			names = append(names, strings.Split(strings.TrimSuffix(f[1], ":"), "@")[0])
		}
	}
	return strings.Join(names, " ")
}

// ProbeGap sends a datagram every 5 ms from one namespace to addr in another between from
// and until, runs during() meanwhile, and returns the longest time without a datagram
// arriving (from `from` to the first, between two, and from the last to until).
func ProbeGap(t testing.TB, src, dst *netnstest.Netns, addr string, from, until time.Time, during func()) time.Duration {
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
		return until.Sub(from)
	}
	gap := got[0].Sub(from)
	for i := 1; i < len(got); i++ {
		gap = max(gap, got[i].Sub(got[i-1]))
	}
	return max(gap, until.Sub(got[len(got)-1]))
}

// CheckSpread sends 32 UDP flows from `from` to dst and fails the test unless both b and c
// (two peers sharing dst's range) received some of them within 3 s, by their counters of
// what came from `from`.
func CheckSpread(t testing.TB, from, b, c *End, dst netip.AddrPort) {
	t.Helper()
	bRx, cRx := b.PeerStatus(from.Iface).RxBytes, c.PeerStatus(from.Iface).RxBytes
	if err := from.NS.SendUDPFlows(netip.AddrPortFrom(netip.Addr{}, 20000), dst, 32); err != nil {
		t.Fatal(err)
	}
	var db, dc int64
	deadline := time.Now().Add(3 * time.Second)
	for (db == 0 || dc == 0) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		db, dc = b.PeerStatus(from.Iface).RxBytes-bRx, c.PeerStatus(from.Iface).RxBytes-cRx
	}
	t.Logf("32 flows: %d bytes into b, %d into c", db, dc)
	if db == 0 || dc == 0 {
		t.Errorf("32 flows: %d bytes into b, %d into c; want both used", db, dc)
	}
}

// BareTunnel is two ends of the driver on a switch of their own (172.29.<subnet>.11 and .12),
// peered, each with its tunnel address (10.200.1.1 and 10.200.2.1): the bare tunnel weft's
// gateways are compared with. It returns the client end's namespace, the server end's, and
// the server's tunnel address.
func BareTunnel(t testing.TB, subnet int) (client, server *netnstest.Netns, addr netip.Addr) {
	t.Helper()
	a, c := peeredEnds(t, netnstest.NewSwitch(t), fmt.Sprintf("bt%d", subnet), subnet)
	if err := a.NS.PingUntil("10.200.2.1", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	return a.NS, c.NS, netip.MustParseAddr("10.200.2.1")
}

// peeredEnds starts two ends of the driver on sw (172.29.<subnet>.11 and .12, named
// <name>a and <name>c) with tunnel addresses 10.200.1.1 and 10.200.2.1, each the other's
// peer for its /24.
func peeredEnds(t testing.TB, sw *netnstest.Switch, name string, subnet int) (a, c *End) {
	t.Helper()
	a = NewEnd(t, sw, name+"a", fmt.Sprintf("172.29.%d.11", subnet), 51820, "10.200.1.1/32")
	c = NewEnd(t, sw, name+"c", fmt.Sprintf("172.29.%d.12", subnet), 51820, "10.200.2.1/32")
	a.SetPeers(c.Peer("10.200.2.0/24"))
	c.SetPeers(a.Peer("10.200.1.0/24"))
	return a, c
}

// RoutedTunnel is BareTunnel with a cluster's hops around it: on each side a pod namespace
// behind a node namespace (a veth, as a pod has), the node on the tunnel ends' switch
// routing the other side's range to its tunnel end, which forwards into the tunnel — the
// path pod → node → gateway → tunnel → gateway → node → pod, built by hand. It returns the
// client pod's namespace, the server pod's, and the server pod's address (10.200.2.5).
// What weft adds beyond the path's hops is the cross-cluster throughput over this one's.
func RoutedTunnel(t testing.TB, subnet int) (client, server *netnstest.Netns, addr netip.Addr) {
	t.Helper()
	sw := netnstest.NewSwitch(t)
	ip := func(host int) string { return fmt.Sprintf("172.29.%d.%d", subnet, host) }
	a, c := peeredEnds(t, sw, fmt.Sprintf("rt%d", subnet), subnet)
	side := func(end *End, name string, nodeHost int, pod, peerRange string) *netnstest.Netns {
		node, podNS := netnstest.New(t, name+"n"), netnstest.New(t, name+"p")
		sw.Plug(t, node, "p"+name+"n", ip(nodeHost)+"/24")
		podNS.MustIP(t, "link", "add", "eth0", "type", "veth", "peer", "name", "pod0", "netns", node.Path())
		podNS.MustIP(t, "addr", "add", pod+"/32", "dev", "eth0")
		podNS.MustIP(t, "link", "set", "eth0", "up")
		podNS.MustIP(t, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
		podNS.MustIP(t, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
		node.MustIP(t, "addr", "add", "169.254.1.1/32", "dev", "pod0")
		node.MustIP(t, "link", "set", "pod0", "up")
		node.MustIP(t, "route", "add", pod+"/32", "dev", "pod0")
		node.MustIP(t, "route", "add", peerRange, "via", end.IP.String())
		end.NS.MustIP(t, "route", "add", pod+"/32", "via", ip(nodeHost))
		for _, n := range []*netnstest.Netns{node, end.NS} {
			if out, err := n.Run("sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=2"); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
		}
		return podNS
	}
	client = side(a, fmt.Sprintf("rt%dx", subnet), 21, "10.200.1.5", "10.200.2.0/24")
	server = side(c, fmt.Sprintf("rt%dy", subnet), 22, "10.200.2.5", "10.200.1.0/24")
	if err := client.PingUntil("10.200.2.5", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	return client, server, netip.MustParseAddr("10.200.2.5")
}

// DebianTunnel is BareTunnel made of Debian's wireguard-go (the reference weft's tunnel is
// measured against): two processes on a switch of their own (172.29.<subnet>.11 and .12),
// configured over their UAPI sockets. It fails the test when wireguard-go is not installed
// (hack/lab-deps.sh installs it).
func DebianTunnel(t testing.TB, subnet int) (client, server *netnstest.Netns, addr netip.Addr) {
	t.Helper()
	bin, err := exec.LookPath("wireguard-go")
	if err != nil {
		t.Fatal("wireguard-go is not installed (hack/lab-deps.sh installs it)")
	}
	sw := netnstest.NewSwitch(t)
	ka, _ := wgtypes.GeneratePrivateKey()
	kc, _ := wgtypes.GeneratePrivateKey()
	a := wireguardGo(t, bin, sw, fmt.Sprintf("dt%da", subnet), fmt.Sprintf("172.29.%d.11", subnet), "10.200.1.1/32", ka)
	c := wireguardGo(t, bin, sw, fmt.Sprintf("dt%dc", subnet), fmt.Sprintf("172.29.%d.12", subnet), "10.200.2.1/32", kc)
	a.peer(t, kc.PublicKey(), fmt.Sprintf("172.29.%d.12:51820", subnet), "10.200.2.0/24")
	c.peer(t, ka.PublicKey(), fmt.Sprintf("172.29.%d.11:51820", subnet), "10.200.1.0/24")
	if err := a.ns.PingUntil("10.200.2.1", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	return a.ns, c.ns, netip.MustParseAddr("10.200.2.1")
}

// wgGo is Debian's wireguard-go running in a namespace.
type wgGo struct {
	ns    *netnstest.Netns
	iface string
}

func wireguardGo(t testing.TB, bin string, sw *netnstest.Switch, name, ip, address string, key wgtypes.Key) *wgGo {
	t.Helper()
	w := &wgGo{ns: netnstest.New(t, name), iface: "wgg" + name}
	sw.Plug(t, w.ns, "p"+name, ip+"/24")
	cmd := exec.Command("nsenter", "--net="+w.ns.Path(), "--", bin, "-f", w.iface)
	cmd.Env = append(os.Environ(), "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1", "LOG_LEVEL=error")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	c, err := wgctrl.New()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	port := 51820
	// The control socket appears a moment after the process starts.
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := c.ConfigureDevice(w.iface, wgtypes.Config{PrivateKey: &key, ListenPort: &port})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("configuring wireguard-go %s: %v", w.iface, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	w.ns.MustIP(t, "addr", "add", address, "dev", w.iface)
	w.ns.MustIP(t, "link", "set", w.iface, "mtu", "1420", "up")
	return w
}

func (w *wgGo) peer(t testing.TB, key wgtypes.Key, endpoint, prefix string) {
	t.Helper()
	c, err := wgctrl.New()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p := netip.MustParsePrefix(prefix)
	err = c.ConfigureDevice(w.iface, wgtypes.Config{Peers: []wgtypes.PeerConfig{{PublicKey: key,
		Endpoint:   net.UDPAddrFromAddrPort(netip.MustParseAddrPort(endpoint)),
		AllowedIPs: []net.IPNet{{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}}}}})
	if err != nil {
		t.Fatal(err)
	}
	w.ns.MustIP(t, "route", "add", prefix, "dev", w.iface)
}
