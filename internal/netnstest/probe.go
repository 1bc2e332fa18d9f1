package netnstest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
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
