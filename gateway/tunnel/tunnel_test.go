package tunnel_test

import (
	"strings"
	"testing"

	"github.com/weft-net/weft/gateway/tunnel"
)

type nop struct{ tunnel.Tunnel }

func TestRegistry(t *testing.T) {
	r := tunnel.NewRegistry()
	made := 0
	f := func(tunnel.Config) (tunnel.Tunnel, error) { made++; return nop{}, nil }
	if err := r.Register("b", f); err != nil {
		t.Fatal(err)
	}
	if err := r.Register("a", f); err != nil {
		t.Fatal(err)
	}
	if err := r.Register("a", f); err == nil {
		t.Error("a driver name was registered twice")
	}
	if got := strings.Join(r.Names(), ","); got != "a,b" {
		t.Errorf("Names() = %s", got)
	}
	if _, err := r.New("c", tunnel.Config{Interface: "x"}); err == nil || !strings.Contains(err.Error(), "known: a, b") {
		t.Errorf("unknown driver: %v", err)
	}
	for _, name := range []string{"", "sixteen-chars-xx"} {
		if _, err := r.New("a", tunnel.Config{Interface: name}); err == nil {
			t.Errorf("interface name %q accepted", name)
		}
	}
	if _, err := r.New("a", tunnel.Config{Interface: "weft-wg0"}); err != nil || made != 1 {
		t.Errorf("New: %v (factory called %d times)", err, made)
	}
}
