package wireguard_test

import (
	"testing"
	"time"

	"github.com/weft-net/weft/internal/netnstest"
	"github.com/weft-net/weft/internal/tunneltest"
)

// BenchmarkTunnelTCP measures TCP through a WireGuard tunnel between two namespaces: weft's
// driver (the embedded userspace device here, the kernel's where the module is loaded),
// alone and with a cluster's hops around it, beside Debian's wireguard-go and a bare veth
// pair, in the same run.
func BenchmarkTunnelTCP(b *testing.B) {
	netnstest.RequireRoot(b)
	b.Run("weft-driver", func(b *testing.B) {
		client, server, addr := tunneltest.BareTunnel(b, 9)
		netnstest.BenchTCP(b, server, client, addr.String()+":5401")
	})
	// The same tunnel with a cluster's hops around it (pod → node → tunnel end, each way).
	b.Run("weft-driver-routed", func(b *testing.B) {
		client, server, addr := tunneltest.RoutedTunnel(b, 11)
		netnstest.BenchTCP(b, server, client, addr.String()+":5401")
	})
	b.Run("debian-wireguard-go", func(b *testing.B) {
		client, server, addr := tunneltest.DebianTunnel(b, 10)
		netnstest.BenchTCP(b, server, client, addr.String()+":5401")
	})
	b.Run("raw-veth", func(b *testing.B) {
		client, server := netnstest.VethPair(b, 1420)
		if err := client.PingUntil("10.97.0.2", 20*time.Second); err != nil {
			b.Fatal(err)
		}
		netnstest.BenchTCP(b, server, client, "10.97.0.2:5401")
	})
}
