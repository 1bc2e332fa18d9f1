package datapath

import (
	"net/netip"
	"strings"
	"testing"
)

func TestRegistry(t *testing.T) {
	r := NewRegistry()
	if err := r.Register("ovs", func(Options) (Datapath, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}
	if err := r.Register("ovs", func(Options) (Datapath, error) { return nil, nil }); err == nil || !strings.Contains(err.Error(), "already registered") {
		t.Errorf("duplicate registration: %v", err)
	}
	_ = r.Register("ebpf", func(Options) (Datapath, error) { return nil, nil })
	if _, err := r.New("vpp", Options{}); err == nil || !strings.Contains(err.Error(), `unknown datapath driver "vpp" (known: ebpf, ovs)`) {
		t.Errorf("unknown driver: %v", err)
	}
	if _, err := r.New("ovs", Options{}); err != nil {
		t.Errorf("known driver: %v", err)
	}
}

func TestGateway(t *testing.T) {
	for block, want := range map[string]string{"10.244.3.0/24": "10.244.3.1", "10.244.3.17/24": "10.244.3.1", "fd00:1::/80": "fd00:1::1"} {
		if got := Gateway(netip.MustParsePrefix(block)); got.String() != want {
			t.Errorf("Gateway(%s) = %s, want %s", block, got, want)
		}
	}
}
