package conformance_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/weft-net/weft/agent/datapath"
	"github.com/weft-net/weft/internal/netnstest"
)

// TestUninstallLeavesTheNodeAsItWas: a node with pods, remote nodes and peer routes, after
// Uninstall from a driver that never ran Init (a restarted agent uninstalling), has the
// links, addresses, routes and tc filters it had before the driver came, no pins and no
// state files; a second Uninstall finds nothing to do; installing again works.
func TestUninstallLeavesTheNodeAsItWas(t *testing.T) {
	netnstest.RequireRoot(t)
	for _, d := range drivers {
		t.Run(d.name, func(t *testing.T) {
			sw := netnstest.NewSwitch(t)
			n1 := bareNode(t, d, sw, "n1", "172.29.0.11", "10.99.1.0/24")
			before := nodeSnapshot(t, n1, d)
			n1.restart(t)
			n2 := newNode(t, d, sw, "n2", "172.29.0.12", "10.99.2.0/24")
			for _, n := range []*node{n1, n2} {
				n.do(t, func() error {
					return n.dp.SetRemoteNodes(context.Background(), []datapath.RemoteNode{n1.remote(), n2.remote()})
				})
			}
			p1, _ := n1.addPod(t, "p1", "10.99.1.5/24")
			n1.addPod(t, "p3", "10.99.1.6/24")
			p2, _ := n2.addPod(t, "p2", "10.99.2.5/24")
			p2.ServeEcho(t, netip.MustParseAddr("10.99.2.5"), nil, []int{53})
			if err := p1.PingUntil("10.99.2.5", 5*time.Second); err != nil {
				t.Fatal(err)
			}
			n1.do(t, func() error {
				return n1.dp.SetPeerRoutes(context.Background(), datapath.PeerRoutes{
					Prefixes: []netip.Prefix{netip.MustParsePrefix("10.200.0.0/16")}, Gateways: []netip.Addr{n2.ip}})
			})
			if snap := nodeSnapshot(t, n1, d); slices.Equal(snap, before) {
				t.Fatal("the installed node looks like the bare one: the snapshot sees nothing")
			}

			// A new driver, as in an agent started when the uninstall began.
			_ = n1.dp.Close()
			n1.dp = n1.make(n1.opts)
			for round := range 2 {
				n1.do(t, func() error { return n1.dp.Uninstall(context.Background(), n1.spec) })
				// (ovs-vswitchd lets go of devices a moment after the database says so.)
				after := nodeSnapshot(t, n1, d)
				for deadline := time.Now().Add(5 * time.Second); !slices.Equal(after, before) && time.Now().Before(deadline); {
					time.Sleep(50 * time.Millisecond)
					after = nodeSnapshot(t, n1, d)
				}
				if !slices.Equal(after, before) {
					t.Fatalf("round %d: the node is not as before the driver came:\n%s", round, diffLines(before, after))
				}
			}
			if _, err := p1.Run("ip", "link", "show", "eth0"); err == nil {
				t.Error("the pod still has its interface")
			}
			if entries, err := os.ReadDir(filepath.Join(n1.dir, "state")); err == nil && len(entries) > 0 {
				t.Errorf("state files left: %v", entries)
			}
			if _, err := os.Stat(filepath.Join(n1.bpffs, "weft")); !errors.Is(err, os.ErrNotExist) {
				out, _ := n1.ns.Run("find", n1.bpffs)
				t.Errorf("pins left in bpffs (%v):\n%s", err, out)
			}

			// Installed again, on a node whose records are gone (the agent gives the remote
			// nodes again).
			n1.restart(t)
			n1.do(t, func() error {
				return n1.dp.SetRemoteNodes(context.Background(), []datapath.RemoteNode{n1.remote(), n2.remote()})
			})
			p4, _ := n1.addPod(t, "p4", "10.99.1.7/24")
			if err := p4.PingUntil("10.99.2.5", 5*time.Second); err != nil {
				n1.diagnose(t)
				t.Fatalf("after installing again: %v", err)
			}
		})
	}
}

// nodeSnapshot is what the node's network looks like: links, addresses, routes of every
// table, neighbours set by hand, tc filters, TCX programs — one sorted line each. The
// userspace datapath's own device (ovs-netdev, Open vSwitch's and not the driver's) is left
// out.
func nodeSnapshot(t *testing.T, n *node, d driver) []string {
	t.Helper()
	var lines []string
	run := func(args ...string) string {
		out, err := n.ns.Run(args...)
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		return out
	}
	var links []string
	for _, l := range strings.Split(strings.TrimSpace(run("ip", "-o", "link", "show")), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		if d.name == "ovs" && name == "ovs-netdev" {
			continue
		}
		links = append(links, name)
		lines = append(lines, "link "+name+" "+strings.Join(f[2:4], " "))
	}
	for _, l := range strings.Split(strings.TrimSpace(run("ip", "-o", "addr", "show")), "\n") {
		if f := strings.Fields(l); len(f) >= 4 && slices.Contains(links, f[1]) {
			lines = append(lines, "addr "+f[1]+" "+f[2]+" "+f[3])
		}
	}
	for _, l := range strings.Split(strings.TrimSpace(run("ip", "route", "show", "table", "all")), "\n") {
		// (IPv6 link-local routes are the kernel's, and come and go with DAD.)
		if !strings.Contains(l, "fe80::") {
			lines = append(lines, "route "+l)
		}
	}
	for _, l := range strings.Split(strings.TrimSpace(run("ip", "neigh", "show", "nud", "permanent")), "\n") {
		lines = append(lines, "neigh "+l)
	}
	for _, name := range links {
		for _, dir := range []string{"ingress", "egress"} {
			if out, err := n.ns.Run("tc", "filter", "show", "dev", name, dir); err == nil && strings.TrimSpace(out) != "" {
				lines = append(lines, "tc "+name+" "+dir+" "+strings.Join(strings.Fields(out), " "))
			}
		}
	}
	// TCX programs (no tc filter shows them).
	if err := n.ns.Do(func() error {
		all, err := netlink.LinkList()
		if err != nil {
			return err
		}
		for _, l := range all {
			for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
				if res, err := link.QueryPrograms(link.QueryOptions{Target: l.Attrs().Index, Attach: at}); err == nil && len(res.Programs) > 0 {
					lines = append(lines, fmt.Sprintf("tcx %s %s %d programs", l.Attrs().Name, at, len(res.Programs)))
				}
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(lines)
	return lines
}

// diffLines lists the lines only one side has.
func diffLines(before, after []string) string {
	var b strings.Builder
	for _, l := range before {
		if !slices.Contains(after, l) {
			b.WriteString("- " + l + "\n")
		}
	}
	for _, l := range after {
		if !slices.Contains(before, l) {
			b.WriteString("+ " + l + "\n")
		}
	}
	return b.String()
}
