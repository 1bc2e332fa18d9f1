// Package netnstest gives tests throwaway network namespaces, removed when the test ends,
// and helpers to run code and commands inside them. Tests using it need root.
package netnstest

import (
	"crypto/rand"
	"encoding/hex"
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

	"github.com/containernetworking/plugins/pkg/ns"
)

// Netns is a named network namespace owned by a test.
type Netns struct {
	Name string
}

// RequireRoot fails the test with a clear message when not run as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test creates network namespaces and needs root (make test runs as root, as CI does)")
	}
}

// New creates a namespace with its loopback up; it is deleted when the test ends.
func New(t testing.TB, name string) *Netns {
	t.Helper()
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	n := &Netns{Name: "wt-" + hex.EncodeToString(b) + "-" + name}
	if out, err := exec.Command("ip", "netns", "add", n.Name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", n.Name, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", n.Name).Run() })
	n.MustIP(t, "link", "set", "lo", "up")
	return n
}

// Path is the namespace's mount path.
func (n *Netns) Path() string { return "/run/netns/" + n.Name }

// Do runs fn with the calling goroutine's thread inside the namespace.
func (n *Netns) Do(fn func() error) error {
	return ns.WithNetNSPath(n.Path(), func(ns.NetNS) error { return fn() })
}

// Run runs a command inside the namespace and returns its combined output.
func (n *Netns) Run(args ...string) (string, error) {
	out, err := exec.Command("nsenter", append([]string{"--net=" + n.Path(), "--"}, args...)...).CombinedOutput()
	return string(out), err
}

// RunStdin runs a command inside the namespace with stdin.
func (n *Netns) RunStdin(stdin string, args ...string) (string, error) {
	cmd := exec.Command("nsenter", append([]string{"--net=" + n.Path(), "--"}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// MustIP runs `ip args` inside the namespace and fails the test on error.
func (n *Netns) MustIP(t testing.TB, args ...string) {
	t.Helper()
	if out, err := n.Run(append([]string{"ip"}, args...)...); err != nil {
		t.Fatalf("ip %s in %s: %v: %s", strings.Join(args, " "), n.Name, err, out)
	}
}

// Switch is a bridge in its own namespace that other namespaces plug into.
type Switch struct{ ns *Netns }

// NewSwitch creates an underlay switch.
func NewSwitch(t testing.TB) *Switch {
	s := &Switch{ns: New(t, "sw")}
	s.ns.MustIP(t, "link", "add", "br0", "type", "bridge")
	s.ns.MustIP(t, "link", "set", "br0", "up")
	return s
}

// Plug connects n to the switch with interface eth0 holding addr (CIDR notation).
func (s *Switch) Plug(t testing.TB, n *Netns, port, addr string) {
	t.Helper()
	s.ns.MustIP(t, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", n.Name)
	s.ns.MustIP(t, "link", "set", port, "master", "br0", "up")
	n.MustIP(t, "addr", "add", addr, "dev", "eth0")
	n.MustIP(t, "link", "set", "eth0", "up")
}

// Ping sends count pings from n to ip and reports whether they all came back.
func (n *Netns) Ping(ip string, count int) error {
	out, err := n.Run("ping", "-c", fmt.Sprint(count), "-i", "0.2", "-W", "2", ip)
	if err != nil {
		return fmt.Errorf("ping %s from %s: %w\n%s", ip, n.Name, err, out)
	}
	return nil
}

// PingUntil pings ip from n, one echo at a time, until one comes back or limit passes; it
// returns the last failure then (paths that need warming up: tunnels, learned routes).
func (n *Netns) PingUntil(ip string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		err := n.Ping(ip, 1)
		if err == nil || time.Now().After(deadline) {
			return err
		}
	}
}

// SendUDPFlows sends one datagram to dst from each of count source ports starting at
// from's port (from's address: the source address, when valid): count distinct flows, for
// checking how flows are spread over paths.
func (n *Netns) SendUDPFlows(from, dst netip.AddrPort, count int) error {
	return n.Do(func() error {
		for i := 0; i < count; i++ {
			local := &net.UDPAddr{Port: int(from.Port()) + i}
			if from.Addr().IsValid() {
				local.IP = from.Addr().AsSlice()
			}
			c, err := net.DialUDP("udp", local, net.UDPAddrFromAddrPort(dst))
			if err != nil {
				return err
			}
			_, err = c.Write([]byte("flow"))
			_ = c.Close()
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// ListenUDP opens a UDP socket inside the namespace; the socket stays there.
func (n *Netns) ListenUDP(addr string) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := n.Do(func() (err error) {
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
		return err
	})
	return c, err
}

// ReceiveUDP reads up to max datagrams from c, or until limit passes, and returns their
// sources (one per datagram).
func ReceiveUDP(c *net.UDPConn, max int, limit time.Duration) []netip.AddrPort {
	var from []netip.AddrPort
	buf := make([]byte, 64)
	_ = c.SetReadDeadline(time.Now().Add(limit))
	for len(from) < max {
		_, src, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			break
		}
		from = append(from, src)
	}
	return from
}

// Listen opens a TCP listener inside the namespace; the socket stays there.
func (n *Netns) Listen(addr string) (net.Listener, error) {
	var l net.Listener
	err := n.Do(func() (err error) { l, err = net.Listen("tcp", addr); return err })
	return l, err
}

// Dial opens a TCP connection from inside the namespace.
func (n *Netns) Dial(addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() (err error) { c, err = net.DialTimeout("tcp", addr, timeout); return err })
	return c, err
}

// TransferTCP sends size bytes from client namespace to a server in server namespace at
// addr, and checks that the server received exactly them.
func TransferTCP(server, client *Netns, addr string, size int) error {
	return TransferTCPVia(server, client, addr, addr, size)
}

// TransferTCPVia is TransferTCP with the client dialling dial (a translated address, such as
// a Service) while the server listens on listen.
func TransferTCPVia(server, client *Netns, listen, dial string, size int) error {
	addr := listen
	l, err := server.Listen(addr)
	if err != nil {
		return err
	}
	defer l.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- -1
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		n, _ := io.Copy(io.Discard, c)
		_, _ = c.Write([]byte(fmt.Sprint(n)))
		got <- n
	}()
	c, err := client.Dial(dial, 5*time.Second)
	if err != nil {
		return fmt.Errorf("dial %s from %s: %w", dial, client.Name, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.CopyN(c, rand.Reader, int64(size)); err != nil {
		return fmt.Errorf("sending to %s: %w", addr, err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	reply, _ := io.ReadAll(c)
	if n := <-got; n != int64(size) || string(reply) != fmt.Sprint(size) {
		return fmt.Errorf("server at %s received %d bytes (reply %q), want %d", addr, n, reply, size)
	}
	return nil
}

// BenchTCP measures TCP throughput from client to a server listening at addr in server:
// after WarmTCP bytes that are not timed, each benchmark operation moves 64 MiB of a
// zero-filled buffer over the same connection (so the sender's cost is the network path,
// not generating data). It reports Gbit/s, and ns/op as the time of one operation's 64 MiB.
func BenchTCP(b *testing.B, server, client *Netns, addr string) {
	b.Helper()
	const size = 64 << 20
	gbits, err := MeasureTCP(server, client, addr, WarmTCP, int64(b.N)*size)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(gbits, "Gbit/s")
	b.ReportMetric(size*8/gbits, "ns/op")
}

// WarmTCP is how many bytes BenchTCP sends before it starts timing: enough to carry a
// connection out of slow start and a tunnel process started for the benchmark through its
// buffers' first use (wireguard-go's heap grows to ≈ 100 MB in its first second of a
// transfer, every new page a fault; before this, a 64 MiB transfer through a fresh bare
// tunnel measured 1.05 Gbit/s, the same tunnel 1.6 Gbit/s over 512 MiB).
const WarmTCP = 64 << 20

// MeasureTCP moves warm+size bytes of a zero-filled buffer from client to a server
// listening at addr in server over one connection and returns the throughput of the last
// size bytes in Gbit/s, timed where they arrive (as iperf3's --omit leaves out a
// transfer's first seconds).
func MeasureTCP(server, client *Netns, addr string, warm, size int64) (float64, error) {
	return MeasureTCPVia(server, client, addr, addr, warm, size)
}

// MeasureTCPVia is MeasureTCP with the client dialling dial (a translated address) while the
// server listens on listen.
func MeasureTCPVia(server, client *Netns, listen, dial string, warm, size int64) (float64, error) {
	l, err := server.Listen(listen)
	if err != nil {
		return 0, err
	}
	defer l.Close()
	type result struct {
		n, timed int64 // all bytes received; those read after the timing started
		took     time.Duration
		err      error
	}
	received := make(chan result, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			received <- result{err: err}
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Minute))
		buf := make([]byte, 256<<10)
		var r result
		var start time.Time
		var atStart int64
		if warm == 0 {
			start = time.Now()
		}
		for {
			n, err := c.Read(buf)
			r.n += int64(n)
			if start.IsZero() && r.n >= warm {
				start, atStart = time.Now(), r.n
			}
			if err != nil {
				if !errors.Is(err, io.EOF) {
					r.err = err
				}
				break
			}
		}
		r.timed, r.took = r.n-atStart, time.Since(start)
		received <- r
	}()
	c, err := client.Dial(dial, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Minute))
	buf := make([]byte, 256<<10)
	for sent := int64(0); sent < warm+size; sent += int64(len(buf)) {
		if _, err := c.Write(buf[:min(int64(len(buf)), warm+size-sent)]); err != nil {
			return 0, err
		}
	}
	_ = c.(*net.TCPConn).CloseWrite()
	r := <-received
	if r.err != nil {
		return 0, r.err
	}
	if r.n != warm+size {
		return 0, fmt.Errorf("received %d bytes, sent %d", r.n, warm+size)
	}
	if r.timed <= 0 || r.took <= 0 {
		return 0, fmt.Errorf("nothing arrived after the first %d bytes to time", warm)
	}
	return float64(r.timed) * 8 / 1e9 / r.took.Seconds(), nil
}

// Link joins namespaces a and b with a veth pair (aName in a, bName in b), gives each end
// its address (a CIDR) and brings both up.
func Link(t testing.TB, a *Netns, aName, aAddr string, b *Netns, bName, bAddr string) {
	t.Helper()
	if out, err := exec.Command("ip", "link", "add", aName, "netns", a.Name, "type", "veth", "peer", "name", bName, "netns", b.Name).CombinedOutput(); err != nil {
		t.Fatalf("veth %s/%s: %v: %s", aName, bName, err, out)
	}
	a.MustIP(t, "addr", "add", aAddr, "dev", aName)
	a.MustIP(t, "link", "set", aName, "up")
	b.MustIP(t, "addr", "add", bAddr, "dev", bName)
	b.MustIP(t, "link", "set", bName, "up")
}

// VethPair joins two new namespaces with a bare veth pair (10.97.0.1/24 and 10.97.0.2/24)
// at the given MTU: the reference throughput benchmarks compare against.
func VethPair(t testing.TB, mtu int) (client, server *Netns) {
	t.Helper()
	client, server = New(t, "veth-a"), New(t, "veth-b")
	client.MustIP(t, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", server.Name)
	client.MustIP(t, "addr", "add", "10.97.0.1/24", "dev", "eth0")
	server.MustIP(t, "addr", "add", "10.97.0.2/24", "dev", "eth0")
	client.MustIP(t, "link", "set", "eth0", "mtu", fmt.Sprint(mtu), "up")
	server.MustIP(t, "link", "set", "eth0", "mtu", fmt.Sprint(mtu), "up")
	return client, server
}
