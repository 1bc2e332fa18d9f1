package e2e

import (
	"os"
	"testing"

	"github.com/weft-net/weft/gateway/tunnel/wireguard"
	"github.com/weft-net/weft/internal/tunneltest"
)

// TestMain lets the test binary serve as a bare WireGuard tunnel end (tunneltest), which
// BenchmarkGateways compares the gateways with beside the lab.
func TestMain(m *testing.M) {
	tunneltest.RunHelper(wireguard.Name, wireguard.Register)
	os.Exit(m.Run())
}
