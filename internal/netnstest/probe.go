package netnstest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Outcome is what a connection attempt met.
type Outcome string

const (
	// Connected: the TCP handshake completed, or the UDP echo came back.
	Connected Outcome = "Connected"
	// Refused: a TCP reset or an ICMP error came back at once.
	Refused Outcome = "Refused"
	// NoAnswer: nothing came back in time.
	NoAnswer Outcome = "NoAnswer"
)

// ServeEcho runs, inside the namespace until the test ends, TCP echo servers on tcpPorts and
// UDP echo servers on udpPorts, bound to ip.
func (n *Netns) ServeEcho(t testing.TB, ip netip.Addr, tcpPorts, udpPorts []int) {
	t.Helper()
	for _, port := range tcpPorts {
		l, err := n.Listen(netip.AddrPortFrom(ip, uint16(port)).String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() { _, _ = io.Copy(c, c); c.Close() }()
			}
		}()
	}
	for _, port := range udpPorts {
		u, err := n.ListenUDP(netip.AddrPortFrom(ip, uint16(port)).String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { u.Close() })
		go func() {
			buf := make([]byte, 2048)
			for {
				m, from, err := u.ReadFromUDPAddrPort(buf)
				if err != nil {
					return
				}
				_, _ = u.WriteToUDPAddrPort(buf[:m], from)
			}
		}()
	}
}

// Probe tries one connection from inside the namespace ("tcp" or "udp"; UDP expects an
// echo, sent twice within wait) and says what it met.
func (n *Netns) Probe(network string, to netip.AddrPort, wait time.Duration) Outcome {
	classify := func(err error) Outcome {
		switch {
		case err == nil:
			return Connected
		case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
			return Refused
		}
		return NoAnswer
	}
	if network == "tcp" {
		c, err := n.Dial(to.String(), wait)
		if err == nil {
			c.Close()
		}
		return classify(err)
	}
	var c net.Conn
	if err := n.Do(func() (err error) { c, err = net.Dial("udp", to.String()); return err }); err != nil {
		return NoAnswer
	}
	defer c.Close()
	buf := make([]byte, 16)
	var err error
	for range 2 { // a datagram may be lost while addresses resolve
		if _, err = c.Write([]byte("probe")); err != nil {
			break
		}
		_ = c.SetReadDeadline(time.Now().Add(wait / 2))
		if _, err = c.Read(buf); !isTimeout(err) {
			break
		}
	}
	return classify(err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Echo writes a few bytes on an echoing connection and reads them back.
func Echo(c net.Conn, limit time.Duration) error {
	_ = c.SetDeadline(time.Now().Add(limit))
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != "ping" {
		return fmt.Errorf("echo %q", buf)
	}
	return nil
}

// busyCPU is the machine's CPU time not idle so far (all CPUs), from /proc/stat.
func busyCPU() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: %q", line)
	}
	var busy int64
	for i, v := range f[1:9] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, err
		}
		busy += n
	}
	return time.Duration(busy) * time.Second / 100, nil // USER_HZ
}

// PathCost is what moving data over a path cost.
type PathCost struct {
	Gbps float64
	// CPUPerGB is the machine's busy CPU time per gigabyte moved (all processes: the
	// endpoints, the kernel's forwarding, a userspace switch).
	CPUPerGB time.Duration
	// RTT50 and RTT99 are request/response latencies (1 byte each way, one connection).
	RTT50, RTT99 time.Duration
}

// MeasurePath sends size bytes over one TCP connection from client to server (listening at
// addr), measuring throughput and CPU, then rounds request/response exchanges for latency.
func MeasurePath(server, client *Netns, addr string, size int64, rounds int) (PathCost, error) {
	var pc PathCost
	l, err := server.Listen(addr)
	if err != nil {
		return pc, err
	}
	defer l.Close()
	done := make(chan error, 2)
	go func() {
		for range 2 {
			c, err := l.Accept()
			if err != nil {
				done <- err
				return
			}
			go func() { _, err := io.Copy(c, c); c.Close(); done <- err }()
		}
	}()
	c, err := client.Dial(addr, 5*time.Second)
	if err != nil {
		return pc, err
	}
	buf := make([]byte, 256<<10)
	sink := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, c); sink <- err }() // the echo comes back
	cpu0, err := busyCPU()
	if err != nil {
		return pc, err
	}
	start := time.Now()
	_ = c.SetDeadline(time.Now().Add(5 * time.Minute))
	for sent := int64(0); sent < size; sent += int64(len(buf)) {
		if _, err := c.Write(buf); err != nil {
			c.Close()
			return pc, err
		}
	}
	_ = c.(*net.TCPConn).CloseWrite()
	if err := <-sink; err != nil {
		return pc, err
	}
	elapsed := time.Since(start)
	cpu1, _ := busyCPU()
	c.Close()
	// The data crossed the path twice (there and echoed back).
	moved := float64(2*size) / 1e9
	pc.Gbps = moved * 8 / elapsed.Seconds()
	pc.CPUPerGB = time.Duration(float64(cpu1-cpu0) / moved)

	rr, err := client.Dial(addr, 5*time.Second)
	if err != nil {
		return pc, err
	}
	defer rr.Close()
	lat := make([]time.Duration, 0, rounds)
	one := []byte{1}
	for range rounds {
		t0 := time.Now()
		if _, err := rr.Write(one); err != nil {
			return pc, err
		}
		if _, err := io.ReadFull(rr, one); err != nil {
			return pc, err
		}
		lat = append(lat, time.Since(t0))
	}
	slices.Sort(lat)
	pc.RTT50, pc.RTT99 = lat[len(lat)/2], lat[len(lat)*99/100]
	return pc, nil
}
