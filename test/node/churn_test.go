package node_test

import (
	"fmt"
	"net/netip"
	"sort"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/weft-net/weft/agent/datapath"
	"github.com/weft-net/weft/internal/netnstest"
)

// churnCycles is the number of ADD/DEL cycles; the agent is killed (SIGKILL) at the cycles in
// killAt, in different moments of a cycle.
const churnCycles = 500

var killAt = map[int]string{
	60:  "between ADD and DEL",
	180: "during ADD",
	300: "during DEL",
	420: "during ADD",
}

// TestChurnWithAgentKills runs ADD/DEL cycles like a busy kubelet, kills the agent a few
// times in between and in the middle of commands, and checks that nothing leaks: no address
// record, no OVS port, no veth. A failed ADD is followed by DELs until one succeeds, as the
// kubelet does.
func TestChurnWithAgentKills(t *testing.T) {
	netnstest.RequireRoot(t)
	sw := netnstest.NewSwitch(t)
	n := newNode(t, sw, "churn-1", "172.29.3.11", "10.99.3.0/24")

	const podCount = 4
	pods := make([]*corev1.Pod, podCount)
	sandboxes := make([]*netnstest.Netns, podCount)
	for i := range pods {
		pods[i], sandboxes[i] = n.pod(fmt.Sprintf("churn-%d", i))
	}

	// del retries a DEL across an agent restart; it must succeed within a bounded time.
	del := func(cid string, p *corev1.Pod, sb *netnstest.Netns) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			r := n.cni("DEL", cid, p, sb)
			if r.err() == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("DEL %s never succeeded: %v", cid, r.err())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	start := time.Now()
	failedAdds, seen := 0, map[netip.Addr]bool{}
	for i := 0; i < churnCycles; i++ {
		k := i % podCount
		p, sb := pods[k], sandboxes[k]
		cid := fmt.Sprintf("churn%04d", i)
		var add cniResult
		switch killAt[i] {
		case "during ADD":
			done := make(chan cniResult, 1)
			go func() { done <- n.cni("ADD", cid, p, sb) }()
			time.Sleep(time.Duration(i/10) * time.Millisecond) // 18 ms, 42 ms: before and while the agent works
			n.stopAgent(syscall.SIGKILL)
			add = <-done
			n.restarts++
			n.startAgent()
		default:
			add = n.cni("ADD", cid, p, sb)
		}
		if err := add.err(); err != nil {
			failedAdds++
			t.Logf("cycle %d: ADD failed (%s): %v", i, killAt[i], err)
		} else {
			ip := podIP(add)
			if !n.block.Contains(ip) {
				t.Fatalf("cycle %d: address %s outside the node's block %s", i, ip, n.block)
			}
			seen[ip] = true
			if i%100 == 0 {
				if err := sb.Ping(datapath.Gateway(n.block).String(), 1); err != nil {
					t.Errorf("cycle %d: the pod cannot reach its gateway: %v", i, err)
				}
			}
		}
		switch killAt[i] {
		case "between ADD and DEL":
			n.restartAgent()
			if add.err() == nil {
				if r := n.cni("CHECK", cid, p, sb); r.err() != nil {
					t.Errorf("cycle %d: CHECK after the agent restart: %v", i, r.err())
				}
			}
			del(cid, p, sb)
		case "during DEL":
			done := make(chan struct{})
			go func() { _ = n.cni("DEL", cid, p, sb); close(done) }()
			time.Sleep(3 * time.Millisecond)
			n.stopAgent(syscall.SIGKILL)
			<-done
			n.restarts++
			n.startAgent()
			del(cid, p, sb)
		default:
			del(cid, p, sb)
		}
	}
	elapsed := time.Since(start)
	t.Logf("%d ADD/DEL cycles in %s (%d agent kills, %d ADDs failed while the agent was down), %d distinct addresses used",
		churnCycles, elapsed.Round(time.Millisecond), n.restarts, failedAdds, len(seen))
	if n.restarts != len(killAt) {
		t.Errorf("agent restarted %d times, want %d", n.restarts, len(killAt))
	}

	if left := n.leftovers(); len(left) > 0 {
		sort.Strings(left)
		t.Errorf("leaked after %d cycles: %v", churnCycles, left)
	}
	for i, sb := range sandboxes {
		if out, err := sb.Run("ip", "-br", "link", "show", "eth0"); err == nil {
			t.Errorf("sandbox %d still has eth0: %s", i, out)
		}
	}
}
