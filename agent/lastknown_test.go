package agent

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/weft-net/weft/agent/datapath"
)

// What the peer routes subsystem keeps is written once per change, private to root, and
// read back as it was; no file is no state.
func TestLastKnownRoutesKeptOncePerChange(t *testing.T) {
	dir := t.TempDir()
	if k, err := loadLastKnownRoutes(dir); k != nil || err != nil {
		t.Fatalf("nothing kept yet: %v %v", k, err)
	}
	s := &lastKnownStore{dir: dir}
	k := lastKnownRoutes{Backend: "ebpf", Node: datapath.Node{Name: "n2", IP: netip.MustParseAddr("172.30.1.12")}, MaxActive: 2,
		Routes: datapath.PeerRoutes{Prefixes: []netip.Prefix{netip.MustParsePrefix("10.245.0.0/16")},
			Gateways: []netip.Addr{netip.MustParseAddr("172.30.1.11"), netip.MustParseAddr("172.30.1.13")}}}
	if err := s.save(k); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, lastKnownRoutesFile)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}
	got, err := loadLastKnownRoutes(dir)
	if err != nil || got == nil || !reflect.DeepEqual(*got, k) {
		t.Fatalf("read back %+v (%v), want %+v", got, err, k)
	}
	// The same again writes nothing (the file removed behind its back stays removed).
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := s.save(k); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("an unchanged state was written again (%v)", err)
	}
	k.Routes.Gateways = k.Routes.Gateways[:1]
	if err := s.save(k); err != nil {
		t.Fatal(err)
	}
	if got, _ := loadLastKnownRoutes(dir); got == nil || len(got.Routes.Gateways) != 1 {
		t.Errorf("a change was not kept: %+v", got)
	}
	if err := os.WriteFile(path, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadLastKnownRoutes(dir); err == nil {
		t.Error("a damaged file reads without an error")
	}
}
