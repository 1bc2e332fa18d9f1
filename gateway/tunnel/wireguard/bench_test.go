package wireguard_test

import (
	"net"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/weft-net/weft/internal/netnstest"
	"github.com/weft-net/weft/internal/tunneltest"
)

// BenchmarkTunnelTCP measures TCP through a WireGuard tunnel between two namespaces: weft's
// driver (the embedded userspace device here, the kernel's where the module is loaded),
// beside Debian's wireguard-go and a bare veth pair, in the same run.
func BenchmarkTunnelTCP(b *testing.B) {
	netnstest.RequireRoot(b)
	b.Run("weft-driver", func(b *testing.B) {
		client, server, addr := tunneltest.BareTunnel(b, 9)
		netnstest.BenchTCP(b, server, client, addr.String()+":5401")
	})
	b.Run("debian-wireguard-go", func(b *testing.B) {
		bin, err := exec.LookPath("wireguard-go")
		if err != nil {
			b.Fatal("wireguard-go is not installed (hack/lab-deps.sh installs it)")
		}
		sw := netnstest.NewSwitch(b)
		ka, _ := wgtypes.GeneratePrivateKey()
		kb, _ := wgtypes.GeneratePrivateKey()
		na := wireguardGo(b, bin, sw, "bga", "172.29.10.11", "10.200.1.1/32", ka)
		nb := wireguardGo(b, bin, sw, "bgb", "172.29.10.12", "10.200.2.1/32", kb)
		na.peer(b, kb.PublicKey(), "172.29.10.12:51820", "10.200.2.0/24")
		nb.peer(b, ka.PublicKey(), "172.29.10.11:51820", "10.200.1.0/24")
		if err := na.ns.PingUntil("10.200.2.1", 20*time.Second); err != nil {
			b.Fatal(err)
		}
		netnstest.BenchTCP(b, nb.ns, na.ns, "10.200.2.1:5401")
	})
	b.Run("raw-veth", func(b *testing.B) {
		client, server := netnstest.VethPair(b, 1420)
		if err := client.PingUntil("10.97.0.2", 20*time.Second); err != nil {
			b.Fatal(err)
		}
		netnstest.BenchTCP(b, server, client, "10.97.0.2:5401")
	})
}

// wgGo is Debian's wireguard-go running in a namespace, configured over its UAPI socket.
type wgGo struct {
	ns    *netnstest.Netns
	iface string
}

func wireguardGo(b *testing.B, bin string, sw *netnstest.Switch, name, ip, address string, key wgtypes.Key) *wgGo {
	b.Helper()
	w := &wgGo{ns: netnstest.New(b, name), iface: "wgg" + name}
	sw.Plug(b, w.ns, "p"+name, ip+"/24")
	cmd := exec.Command("nsenter", "--net="+w.ns.Path(), "--", bin, "-f", w.iface)
	cmd.Env = append(os.Environ(), "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1", "LOG_LEVEL=error")
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	c, err := wgctrl.New()
	if err != nil {
		b.Fatal(err)
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
			b.Fatalf("configuring wireguard-go %s: %v", w.iface, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	w.ns.MustIP(b, "addr", "add", address, "dev", w.iface)
	w.ns.MustIP(b, "link", "set", w.iface, "mtu", "1420", "up")
	return w
}

func (w *wgGo) peer(b *testing.B, key wgtypes.Key, endpoint, prefix string) {
	b.Helper()
	c, err := wgctrl.New()
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	p := netip.MustParsePrefix(prefix)
	err = c.ConfigureDevice(w.iface, wgtypes.Config{Peers: []wgtypes.PeerConfig{{PublicKey: key,
		Endpoint:   net.UDPAddrFromAddrPort(netip.MustParseAddrPort(endpoint)),
		AllowedIPs: []net.IPNet{{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}}}}})
	if err != nil {
		b.Fatal(err)
	}
	w.ns.MustIP(b, "route", "add", prefix, "dev", w.iface)
}
