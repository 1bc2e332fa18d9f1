package wireguard_test

import (
	"testing"
	"time"

	"github.com/weft-net/weft/gateway/tunnel"
	"github.com/weft-net/weft/internal/netnstest"
	"github.com/weft-net/weft/internal/tunneltest"
)

// TestForwardedBulkTCP: a node behind gateway a (a pod node, as the datapaths have them)
// sends bulk TCP to c's side through a's tunnel, over a plain link and over a VXLAN link
// (the ebpf datapath's overlay): the kernel forwards what it received — GRO/GSO packets —
// into the embedded device. Both ways, 16 MiB each, with and without segmentation offload
// on the device.
func TestForwardedBulkTCP(t *testing.T) {
	netnstest.RequireRoot(t)
	for _, segmented := range []bool{false, true} {
		for _, link := range []string{"veth", "vxlan", "vxlan-nocsum"} {
			name := link
			if segmented {
				name += "-segmented"
			}
			t.Run(name, func(t *testing.T) {
				sw := netnstest.NewSwitch(t)
				with := func(c *tunnel.Config) { c.SegmentedOnly = segmented }
				a := tunneltest.NewEndWith(t, sw, "fwa", "172.29.11.11", 51820, "10.200.1.1/32", with)
				c := tunneltest.NewEndWith(t, sw, "fwc", "172.29.11.12", 51820, "10.200.2.1/32", with)
				pod := netnstest.New(t, "fwp")
				pod.MustIP(t, "link", "add", "eth0", "type", "veth", "peer", "name", "fwp0", "netns", a.NS.Path())
				pod.MustIP(t, "link", "set", "eth0", "up")
				a.NS.MustIP(t, "link", "set", "fwp0", "up")
				dev, aDev := "eth0", "fwp0"
				pod.MustIP(t, "addr", "add", "192.168.211.2/24", "dev", "eth0")
				a.NS.MustIP(t, "addr", "add", "192.168.211.1/24", "dev", "fwp0")
				if link == "vxlan-nocsum" {
					// As the lab has its ebpf nodes' underlay: the kernel checksums (and so
					// segments) before a packet leaves, and GRO merges them again.
					for _, e := range []struct {
						ns  *netnstest.Netns
						dev string
					}{{pod, "eth0"}, {a.NS, "fwp0"}} {
						if out, err := e.ns.Run("ethtool", "-K", e.dev, "tx", "off"); err != nil {
							t.Fatalf("%v: %s", err, out)
						}
					}
				}
				if link != "veth" {
					pod.MustIP(t, "link", "add", "vx0", "type", "vxlan", "id", "7", "remote", "192.168.211.1", "local", "192.168.211.2", "dstport", "4789")
					a.NS.MustIP(t, "link", "add", "vx0", "type", "vxlan", "id", "7", "remote", "192.168.211.2", "local", "192.168.211.1", "dstport", "4789")
					pod.MustIP(t, "link", "set", "vx0", "up")
					a.NS.MustIP(t, "link", "set", "vx0", "up")
					dev, aDev = "vx0", "vx0"
				}
				pod.MustIP(t, "addr", "add", "10.200.1.5/32", "dev", "lo")
				pod.MustIP(t, "route", "add", "10.200.2.0/24", "dev", dev, "via", "10.200.1.1", "onlink", "src", "10.200.1.5")
				a.NS.MustIP(t, "route", "add", "10.200.1.5/32", "dev", aDev, "via", "10.200.1.5", "onlink")
				if out, err := a.NS.Run("sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
					t.Fatalf("%v: %s", err, out)
				}
				a.SetPeers(c.Peer("10.200.2.0/24"))
				c.SetPeers(a.Peer("10.200.1.0/24"))
				if err := pod.PingUntil("10.200.2.1", 20*time.Second); err != nil {
					t.Fatal(err)
				}
				for _, dir := range []struct {
					server, client *netnstest.Netns
					addr           string
				}{{c.NS, pod, "10.200.2.1:5402"}, {pod, c.NS, "10.200.1.5:5402"}} {
					start := time.Now()
					if err := netnstest.TransferTCP(dir.server, dir.client, dir.addr, 16<<20); err != nil {
						t.Errorf("%s → %s: %v", dir.client.Name, dir.addr, err)
						continue
					}
					t.Logf("%s → %s: 16 MiB in %v", dir.client.Name, dir.addr, time.Since(start).Round(time.Millisecond))
				}
			})
		}
	}
}
