package node_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/weft-net/weft/internal/netnstest"
)

// TestAgentRestartKeepsTCPStream kills each node's agent (SIGKILL) and starts it again while
// a TCP stream crosses the overlay between pods on the two nodes: the datapath keeps
// forwarding without the agent, and the restarted agent re-applies the same state without
// disturbing it. The stream must survive, intact.
func TestAgentRestartKeepsTCPStream(t *testing.T) {
	netnstest.RequireRoot(t)
	sw := netnstest.NewSwitch(t)
	n1 := newNode(t, sw, "rs-1", "172.29.4.11", "10.99.4.0/24")
	n2 := newNode(t, sw, "rs-2", "172.29.4.12", "10.99.5.0/24")
	pa, sa := n1.pod("rs-client")
	pb, sb := n2.pod("rs-server")
	ra := n1.cni("ADD", "rs-client-1", pa, sa)
	rb := n2.cni("ADD", "rs-server-1", pb, sb)
	if err := errors.Join(ra.err(), rb.err()); err != nil {
		t.Fatal(err)
	}
	server := podIP(rb)
	// The agents learn about each other's node from the API server; wait for the tunnel.
	if err := sa.PingUntil(server.String(), 30*time.Second); err != nil {
		t.Fatalf("pod %s on %s cannot reach pod %s on %s: %v", podIP(ra), n1.name, server, n2.name, err)
	}

	l, err := sb.Listen(net.JoinHostPort(server.String(), "5201"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var received atomic.Int64
	serverDone := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			serverDone <- err
			return
		}
		defer c.Close()
		buf := make([]byte, 64<<10)
		for {
			k, err := c.Read(buf)
			received.Add(int64(k))
			if errors.Is(err, io.EOF) {
				serverDone <- nil
				return
			}
			if err != nil {
				serverDone <- err
				return
			}
		}
	}()
	conn, err := sa.Dial(net.JoinHostPort(server.String(), "5201"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// The client writes paced 16 KiB chunks until told to stop; bounded in time and volume.
	var sent atomic.Int64
	stop := make(chan struct{})
	clientDone := make(chan error, 1)
	go func() {
		chunk := make([]byte, 16<<10)
		limit := time.Now().Add(2 * time.Minute)
		for sent.Load() < 4<<30 && time.Now().Before(limit) {
			select {
			case <-stop:
				clientDone <- conn.(*net.TCPConn).CloseWrite()
				return
			default:
			}
			_ = conn.SetWriteDeadline(time.Now().Add(20 * time.Second))
			k, err := conn.Write(chunk)
			sent.Add(int64(k))
			if err != nil {
				clientDone <- fmt.Errorf("write after %d bytes: %w", sent.Load(), err)
				return
			}
			time.Sleep(time.Millisecond)
		}
		clientDone <- errors.New("the stream ran into its time or volume bound before the test stopped it")
	}()
	defer conn.Close()

	progress := func(what string) {
		t.Helper()
		before := received.Load()
		deadline := time.Now().Add(10 * time.Second)
		for received.Load() < before+1<<20 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the stream stalled at %d bytes received", what, received.Load())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	progress("before the restarts")
	for _, n := range []*simNode{n1, n2, n1} {
		at, t0 := received.Load(), time.Now()
		n.restartAgent()
		t.Logf("%s: agent killed and ready again in %s; %d bytes crossed meanwhile", n.name,
			time.Since(t0).Round(time.Millisecond), received.Load()-at)
		progress("after restarting the agent on " + n.name)
	}
	close(stop)
	if err := <-clientDone; err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-serverDone:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the server did not see the end of the stream")
	}
	if received.Load() != sent.Load() {
		t.Errorf("sent %d bytes, received %d", sent.Load(), received.Load())
	}
	t.Logf("stream intact across %d agent restarts: %d bytes", n1.restarts+n2.restarts, received.Load())
	for _, c := range []struct {
		n   *simNode
		cid string
		pod *corev1.Pod
		sb  *netnstest.Netns
	}{{n1, "rs-client-1", pa, sa}, {n2, "rs-server-1", pb, sb}} {
		if err := c.n.cni("DEL", c.cid, c.pod, c.sb).err(); err != nil {
			t.Errorf("DEL %s: %v", c.cid, err)
		}
		if left := c.n.leftovers(); len(left) > 0 {
			t.Errorf("%s after DEL: %v", c.n.name, left)
		}
	}
}
