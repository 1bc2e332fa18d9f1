package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/weft-net/weft/internal/netnstest"
)

// The failover specs and benchmarks look at the lab from the host: they open sockets inside
// pods' network namespaces (traffic then really goes pod to pod through weft's datapath),
// read tunnel counters in nodes' namespaces, and kill processes or pull a node's cable.

// podNetns finds the network namespace of the lab pod with this IP.
func (l *Lab) podNetns(t testing.TB, podIP string) *netnstest.Netns {
	t.Helper()
	entries, err := os.ReadDir("/run/netns")
	if err != nil {
		t.Fatal(err)
	}
	prefix := "weftlab-" + l.Name + "-pod-"
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		n := &netnstest.Netns{Name: e.Name()}
		if out, err := n.Run("ip", "-o", "-4", "addr", "show"); err == nil && strings.Contains(out, " "+podIP+"/") {
			return n
		}
	}
	t.Fatalf("no namespace of lab %s holds pod IP %s", l.Name, podIP)
	return nil
}

// nodeNetns is a lab node's network namespace.
func (l *Lab) nodeNetns(node string) *netnstest.Netns {
	return &netnstest.Netns{Name: "weftlab-" + l.Name + "-" + node}
}

// tunnelCounters sums a node's WireGuard devices' counters: tx is what they took from the
// node to send through the tunnel, rx what they gave it from the tunnel.
func (l *Lab) tunnelCounters(t testing.TB, node string) (sum netlink.LinkStatistics) {
	t.Helper()
	err := l.nodeNetns(node).Do(func() error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		for _, link := range links {
			if a := link.Attrs(); strings.HasPrefix(a.Name, "weft-wg") && a.Statistics != nil {
				sum.TxPackets += a.Statistics.TxPackets
				sum.RxPackets += a.Statistics.RxPackets
				sum.TxBytes += a.Statistics.TxBytes
				sum.RxBytes += a.Statistics.RxBytes
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("tunnel counters of %s: %v", node, err)
	}
	return sum
}

// gatewayPID finds the weft-gateway process running in a node's network namespace.
func (l *Lab) gatewayPID(t testing.TB, node string) int {
	t.Helper()
	return l.nodeProcess(t, node, "weft-gateway")
}

// nodeProcess finds a process running exe (a base name) in a node's network namespace.
func (l *Lab) nodeProcess(t testing.TB, node, exeName string) int {
	t.Helper()
	var want syscall.Stat_t
	if err := syscall.Stat(l.nodeNetns(node).Path(), &want); err != nil {
		t.Fatal(err)
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", p.Name(), "exe"))
		if err != nil || filepath.Base(exe) != exeName {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat(filepath.Join("/proc", p.Name(), "ns", "net"), &st) == nil && st.Ino == want.Ino && st.Dev == want.Dev {
			return pid
		}
	}
	return 0
}

// underlayPort is the host side of a node's cable on the lab's underlay bridge.
func (l *Lab) underlayPort(node string) (ns *netnstest.Netns, link string) {
	// weft-<c>-node-<n> is plugged into port c<c>n<n>.
	parts := strings.Split(node, "-")
	return &netnstest.Netns{Name: "weftlab-" + l.Name + "-underlay"}, "c" + parts[1] + "n" + parts[3]
}

// ProbeResult is a probe stream's outcome.
type ProbeResult struct {
	Sent, Answered int
	// Gap is the longest time without an answered probe: from sending the last probe
	// answered before a loss to sending the first one answered after it.
	Gap time.Duration
	// GapAt is when the gap began.
	GapAt time.Time
}

// probeStream sends "echo <seq>" to a UDP echo server (agnhost netexec) every interval
// from inside the namespace until stop closes, and reports the longest interruption.
func probeStream(ns *netnstest.Netns, server netip.AddrPort, interval time.Duration, stop <-chan struct{}) (ProbeResult, error) {
	var conn *net.UDPConn
	if err := ns.Do(func() (err error) { conn, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(server)); return err }); err != nil {
		return ProbeResult{}, err
	}
	defer conn.Close()
	var mu sync.Mutex
	sent := map[int]time.Time{}
	answered := map[int]bool{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			if seq, err := strconv.Atoi(strings.TrimSpace(string(buf[:n]))); err == nil {
				mu.Lock()
				answered[seq] = true
				mu.Unlock()
			}
		}
	}()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	seq := 0
loop:
	for {
		select {
		case <-stop:
			break loop
		case <-tick.C:
		}
		mu.Lock()
		sent[seq] = time.Now()
		mu.Unlock()
		_, _ = conn.Write([]byte("echo " + strconv.Itoa(seq)))
		seq++
	}
	time.Sleep(500 * time.Millisecond) // the last answers
	_ = conn.Close()
	<-done
	mu.Lock()
	defer mu.Unlock()
	r := ProbeResult{Sent: seq, Answered: len(answered)}
	if r.Answered == 0 {
		return r, fmt.Errorf("none of %d probes to %s was answered", seq, server)
	}
	var seqs []int
	for s := range answered {
		seqs = append(seqs, s)
	}
	sort.Ints(seqs)
	for i := 1; i < len(seqs); i++ {
		if g := sent[seqs[i]].Sub(sent[seqs[i-1]]); g > r.Gap {
			r.Gap, r.GapAt = g, sent[seqs[i-1]]
		}
	}
	// Losses at either end of the stream count too.
	if g := sent[seqs[0]].Sub(sent[0]); g > r.Gap {
		r.Gap, r.GapAt = g, sent[0]
	}
	if g := sent[seq-1].Sub(sent[seqs[len(seqs)-1]]); g > r.Gap {
		r.Gap, r.GapAt = g, sent[seqs[len(seqs)-1]]
	}
	return r, nil
}

// tcpStream sends a counted byte pattern from one pod namespace to a listener in another (at
// addr's port) at
// about rate bytes per second until stop closes, then checks that the receiver got every
// byte in order. A transfer that survives failover ends with err == nil.
func tcpStream(client, server *netnstest.Netns, addr netip.AddrPort, rate int, stop <-chan struct{}) (int64, error) {
	// On every address of the server's namespace: the client may dial an alias of it.
	l, err := server.Listen(netip.AddrPortFrom(netip.IPv4Unspecified(), addr.Port()).String())
	if err != nil {
		return 0, err
	}
	defer l.Close()
	type result struct {
		n   int64
		err error
	}
	got := make(chan result, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- result{err: err}
			return
		}
		defer c.Close()
		var n int64
		buf := make([]byte, 64<<10)
		for {
			k, err := c.Read(buf)
			for i := 0; i < k; i++ {
				if buf[i] != byte((n+int64(i))%251) {
					got <- result{n: n, err: fmt.Errorf("byte %d is %d, want %d", n+int64(i), buf[i], (n+int64(i))%251)}
					return
				}
			}
			n += int64(k)
			if errors.Is(err, io.EOF) {
				got <- result{n: n}
				return
			}
			if err != nil {
				got <- result{n: n, err: err}
				return
			}
		}
	}()
	conn, err := client.Dial(addr.String(), 5*time.Second)
	if err != nil {
		return 0, err
	}
	const chunk = 16 << 10
	every := time.Duration(int64(time.Second) * chunk / int64(rate))
	var sent int64
	tick := time.NewTicker(every)
	defer tick.Stop()
	var werr error
loop:
	for {
		select {
		case <-stop:
			break loop
		case <-tick.C:
		}
		var b bytes.Buffer
		for i := 0; i < chunk; i++ {
			b.WriteByte(byte((sent + int64(i)) % 251))
		}
		_ = conn.SetWriteDeadline(time.Now().Add(20 * time.Second))
		if _, werr = conn.Write(b.Bytes()); werr != nil {
			break
		}
		sent += chunk
	}
	_ = conn.Close()
	select {
	case r := <-got:
		if werr != nil {
			return r.n, fmt.Errorf("sending: %w", werr)
		}
		if r.err == nil && r.n != sent {
			r.err = fmt.Errorf("received %d bytes of %d", r.n, sent)
		}
		return r.n, r.err
	case <-time.After(30 * time.Second):
		return sent, fmt.Errorf("the receiver did not finish within 30 s of the sender (%d bytes sent)", sent)
	}
}

// CallResult is a call stream's outcome.
type CallResult struct {
	Calls int
	// Failed lists the calls that got no good answer within their time limit: when each
	// began, to what, and why.
	Failed []string
	// Slowest is the longest a successful call took.
	Slowest time.Duration
}

// callStream makes an HTTP call (GET /hostname on a new connection, as a client without
// keep-alive would) from inside the namespace every interval, to each target in turn, until
// stop closes; a call that has no answer within limit is lost. Calls overlap: a slow one does
// not hold back the next.
func callStream(ns *netnstest.Netns, targets []netip.AddrPort, interval, limit time.Duration, stop <-chan struct{}) CallResult {
	client := netnsHTTP(ns, limit)
	var mu sync.Mutex
	var r CallResult
	var wg sync.WaitGroup
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-stop:
			wg.Wait()
			return r
		case <-tick.C:
		}
		to := targets[i%len(targets)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			began := time.Now()
			err := call(client, "http://"+to.String()+"/hostname")
			took := time.Since(began)
			mu.Lock()
			defer mu.Unlock()
			r.Calls++
			if err != nil {
				r.Failed = append(r.Failed, fmt.Sprintf("%s to %s: %v", began.Format("15:04:05.000"), to, err))
			} else {
				r.Slowest = max(r.Slowest, took)
			}
		}()
	}
}

// netnsHTTP is an HTTP client whose connections are made inside namespace ns (dialled
// there: the transport dials on goroutines of its own), one per request, each request
// bounded by limit.
func netnsHTTP(ns *netnstest.Netns, limit time.Duration) *http.Client {
	return &http.Client{Timeout: limit, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext:       func(_ context.Context, _, addr string) (net.Conn, error) { return ns.Dial(addr, limit) },
	}}
}

// call is one GET that must answer 200 with a body.
func call(c *http.Client, url string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || len(body) == 0 {
		return fmt.Errorf("%s: %q", resp.Status, body)
	}
	return nil
}
