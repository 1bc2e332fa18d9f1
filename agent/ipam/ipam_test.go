package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func owner(n int) Owner {
	return Owner{ContainerID: fmt.Sprintf("c%d", n), IfName: "eth0", PodName: fmt.Sprintf("p%d", n), PodNamespace: "ns"}
}

func open(t *testing.T, blocks ...string) *Allocator {
	t.Helper()
	a, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	var bs []netip.Prefix
	for _, b := range blocks {
		bs = append(bs, netip.MustParsePrefix(b))
	}
	a.SetBlocks(bs)
	return a
}

func TestAllocateSkipsReservedAndIsIdempotent(t *testing.T) {
	a := open(t, "10.0.0.0/29") // .0 network, .1 gateway, .7 broadcast: .2-.6 usable
	got, err := a.Allocate(owner(1), netip.Addr{})
	if err != nil || got[0].String() != "10.0.0.2/29" {
		t.Fatalf("first allocation = %v, %v; want 10.0.0.2/29", got, err)
	}
	again, _ := a.Allocate(owner(1), netip.Addr{})
	if again[0] != got[0] {
		t.Errorf("a repeated ADD got %v, want %v", again, got)
	}
	for i := 2; i <= 5; i++ {
		if _, err := a.Allocate(owner(i), netip.Addr{}); err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
	}
	if _, err := a.Allocate(owner(6), netip.Addr{}); !errors.Is(err, ErrExhausted) {
		t.Fatalf("sixth allocation in a /29: err = %v, want ErrExhausted", err)
	}
	if freed, err := a.Release(owner(3)); err != nil || len(freed) != 1 || freed[0].String() != "10.0.0.4" {
		t.Fatalf("Release = %v, %v", freed, err)
	}
	if freed, _ := a.Release(owner(3)); len(freed) != 0 {
		t.Errorf("releasing twice freed %v", freed)
	}
	got, err = a.Allocate(owner(6), netip.Addr{})
	if err != nil || got[0].String() != "10.0.0.4/29" {
		t.Errorf("after a release: %v, %v; want the freed 10.0.0.4", got, err)
	}
}

func TestFixedAddress(t *testing.T) {
	a := open(t, "10.0.0.0/24")
	if got, err := a.Allocate(owner(1), netip.MustParseAddr("10.0.0.50")); err != nil || got[0].String() != "10.0.0.50/24" {
		t.Fatalf("fixed address: %v, %v", got, err)
	}
	_, err := a.Allocate(owner(2), netip.MustParseAddr("10.0.0.50"))
	if !errors.Is(err, ErrInUse) || err.Error() != "address is in use: 10.0.0.50 is held by pod ns/p1" {
		t.Errorf("taken address: %v", err)
	}
	if _, err := a.Allocate(owner(3), netip.MustParseAddr("10.9.0.5")); !errors.Is(err, ErrOutside) {
		t.Errorf("outside address: %v", err)
	}
	if _, err := a.Allocate(owner(4), netip.MustParseAddr("10.0.0.1")); !errors.Is(err, ErrReserved) {
		t.Errorf("gateway address: %v", err)
	}
	all, _ := a.Allocations()
	if len(all) != 1 {
		t.Errorf("failed allocations left records: %+v", all)
	}
}

func TestDualStackAllocatesOnePerFamily(t *testing.T) {
	a := open(t, "10.0.0.0/24", "fd00::/120")
	got, err := a.Allocate(owner(1), netip.Addr{})
	if err != nil || len(got) != 2 || got[0].String() != "10.0.0.2/24" || got[1].String() != "fd00::2/120" {
		t.Fatalf("dual-stack allocation = %v, %v", got, err)
	}
}

func TestConcurrentAllocationsNeverCollide(t *testing.T) {
	a := open(t, "10.0.0.0/24")
	var wg sync.WaitGroup
	ips := make(chan string, 200)
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if got, err := a.Allocate(owner(i), netip.Addr{}); err == nil {
				ips <- got[0].String()
			}
		}()
	}
	wg.Wait()
	close(ips)
	seen := map[string]bool{}
	for ip := range ips {
		if seen[ip] {
			t.Fatalf("%s handed out twice", ip)
		}
		seen[ip] = true
	}
	if len(seen) != 200 {
		t.Errorf("%d allocations succeeded, want 200", len(seen))
	}
}

func TestStoreSurvivesReopenAndIsExclusive(t *testing.T) {
	dir := t.TempDir()
	a, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	a.SetBlocks([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")})
	if _, err := a.Allocate(owner(1), netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir); err == nil {
		t.Fatal("a second process could open a locked store")
	}
	a.Close()
	// A claim interrupted by a crash: the file exists but is empty.
	if err := os.WriteFile(filepath.Join(dir, "10.0.0.9"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	all, _ := b.Allocations()
	if len(all) != 2 || all[0].Owner.ContainerID != "c1" || all[1].Owner != (Owner{}) {
		t.Errorf("after reopen: %+v; want c1's record and an ownerless claim", all)
	}
}
