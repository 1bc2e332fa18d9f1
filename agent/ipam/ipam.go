// Package ipam hands out pod addresses from this node's blocks. Every allocation is a file
// named after the address, created with O_EXCL (the claim) and holding its owner, so a crash
// at any point leaves either a complete record, an empty claim the agent's start-up
// reconcile frees, or nothing. One agent at a time owns the store (an exclusive lock).
package ipam

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
)

// Owner is who holds an address: a CNI attachment of a pod.
type Owner struct {
	ContainerID  string `json:"containerID"`
	IfName       string `json:"ifName"`
	PodNamespace string `json:"podNamespace,omitempty"`
	PodName      string `json:"podName,omitempty"`
	PodUID       string `json:"podUID,omitempty"`
}

func (o Owner) same(other Owner) bool {
	return o.ContainerID == other.ContainerID && o.IfName == other.IfName
}

// Allocation is one held address. A zero Owner means a claim that was never completed.
type Allocation struct {
	IP    netip.Addr
	Owner Owner
}

// Errors callers tell apart.
var (
	ErrExhausted = errors.New("no free address in the node's block")
	ErrOutside   = errors.New("address is outside the node's blocks")
	ErrInUse     = errors.New("address is in use")
	ErrReserved  = errors.New("address is reserved")
	ErrNoBlocks  = errors.New("the node has no pod block yet")
)

// Allocator allocates from blocks; safe for concurrent use.
type Allocator struct {
	dir    string
	lock   *os.File
	mu     sync.Mutex
	blocks []netip.Prefix
	next   map[netip.Prefix]netip.Addr // where the next search starts, per block
}

// Open opens (creating) the store in dir and takes its lock.
func Open(dir string) (*Allocator, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("the IPAM store %s is used by another process: %w", dir, err)
	}
	return &Allocator{dir: dir, lock: f, next: map[netip.Prefix]netip.Addr{}}, nil
}

// Close releases the store's lock.
func (a *Allocator) Close() error { return a.lock.Close() }

// SetBlocks sets the blocks to allocate from (the node's pod CIDRs).
func (a *Allocator) SetBlocks(blocks []netip.Prefix) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.blocks = nil
	for _, b := range blocks {
		a.blocks = append(a.blocks, b.Masked())
	}
}

// Blocks returns the blocks.
func (a *Allocator) Blocks() []netip.Prefix {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]netip.Prefix(nil), a.blocks...)
}

// reserved: the network address, the gateway (first address) and, for IPv4, broadcast.
func reserved(block netip.Prefix, ip netip.Addr) bool {
	network := block.Masked().Addr()
	if ip == network || ip == network.Next() {
		return true
	}
	if ip.Is4() {
		return ip == lastAddr(block)
	}
	return false
}

func lastAddr(block netip.Prefix) netip.Addr {
	b := block.Masked().Addr().As16()
	bits := block.Bits()
	if block.Addr().Is4() {
		bits += 96
	}
	for i := bits; i < 128; i++ {
		b[i/8] |= 1 << (7 - i%8)
	}
	a := netip.AddrFrom16(b)
	if block.Addr().Is4() {
		return a.Unmap()
	}
	return a
}

func (a *Allocator) path(ip netip.Addr) string { return filepath.Join(a.dir, ip.String()) }

// Allocate gives the owner one address per block, or the ones it already holds (so a
// repeated ADD gets the same addresses). want, when valid, asks for that address in its
// family's block. On error nothing is held.
func (a *Allocator) Allocate(owner Owner, want netip.Addr) ([]netip.Prefix, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.blocks) == 0 {
		return nil, ErrNoBlocks
	}
	held, err := a.list()
	if err != nil {
		return nil, err
	}
	var got []netip.Prefix
	var claimed []netip.Addr
	undo := func() {
		for _, ip := range claimed {
			_ = os.Remove(a.path(ip))
		}
	}
	if want.IsValid() && !a.inBlocks(want) {
		return nil, fmt.Errorf("%w: %s (blocks %v)", ErrOutside, want, a.blocks)
	}
	for _, block := range a.blocks {
		if ip, ok := ownedIn(held, owner, block); ok {
			got = append(got, netip.PrefixFrom(ip, block.Bits()))
			continue
		}
		var ip netip.Addr
		if want.IsValid() && block.Contains(want) {
			if reserved(block, want) {
				undo()
				return nil, fmt.Errorf("%w: %s (network, gateway or broadcast of %s)", ErrReserved, want, block)
			}
			if err := a.claim(want, owner); err != nil {
				undo()
				if errors.Is(err, os.ErrExist) {
					return nil, fmt.Errorf("%w: %s is held by %s", ErrInUse, want, holder(held, want))
				}
				return nil, err
			}
			ip = want
		} else {
			ip, err = a.claimFree(block, owner)
			if err != nil {
				undo()
				return nil, err
			}
		}
		claimed = append(claimed, ip)
		got = append(got, netip.PrefixFrom(ip, block.Bits()))
	}
	return got, nil
}

func (a *Allocator) inBlocks(ip netip.Addr) bool {
	for _, b := range a.blocks {
		if b.Contains(ip) {
			return true
		}
	}
	return false
}

func ownedIn(held []Allocation, owner Owner, block netip.Prefix) (netip.Addr, bool) {
	for _, h := range held {
		if h.Owner.same(owner) && block.Contains(h.IP) {
			return h.IP, true
		}
	}
	return netip.Addr{}, false
}

func holder(held []Allocation, ip netip.Addr) string {
	for _, h := range held {
		if h.IP == ip {
			if h.Owner.PodName != "" {
				return "pod " + h.Owner.PodNamespace + "/" + h.Owner.PodName
			}
			return "container " + h.Owner.ContainerID
		}
	}
	return "another pod"
}

// claimFree claims the first free address after the last one handed out, wrapping around,
// so a just-released address is not reused at once.
func (a *Allocator) claimFree(block netip.Prefix, owner Owner) (netip.Addr, error) {
	start, ok := a.next[block]
	if !ok || !block.Contains(start) {
		start = block.Masked().Addr()
	}
	ip := start
	for {
		if !reserved(block, ip) {
			err := a.claim(ip, owner)
			if err == nil {
				a.next[block] = ip.Next()
				return ip, nil
			}
			if !errors.Is(err, os.ErrExist) {
				return netip.Addr{}, err
			}
		}
		ip = ip.Next()
		if !block.Contains(ip) {
			ip = block.Masked().Addr()
		}
		if ip == start {
			return netip.Addr{}, fmt.Errorf("%w %s", ErrExhausted, block)
		}
	}
}

// claim creates the address's record exclusively and writes the owner into it.
func (a *Allocator) claim(ip netip.Addr, owner Owner) error {
	f, err := os.OpenFile(a.path(ip), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	data, _ := json.Marshal(owner)
	_, werr := f.Write(data)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		_ = os.Remove(a.path(ip))
		return err
	}
	return nil
}

// Release frees the owner's addresses and returns them. Releasing nothing is no error.
func (a *Allocator) Release(owner Owner) ([]netip.Addr, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	held, err := a.list()
	if err != nil {
		return nil, err
	}
	var freed []netip.Addr
	for _, h := range held {
		if h.Owner.same(owner) {
			if err := os.Remove(a.path(h.IP)); err != nil && !os.IsNotExist(err) {
				return freed, err
			}
			freed = append(freed, h.IP)
		}
	}
	return freed, nil
}

// ReleaseIP frees one address whoever holds it (reconcile of leaks).
func (a *Allocator) ReleaseIP(ip netip.Addr) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := os.Remove(a.path(ip)); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}

// Restore records an allocation that exists elsewhere (a wired pod whose record was lost).
func (a *Allocator) Restore(ip netip.Addr, owner Owner) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.claim(ip, owner); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return nil
}

// Allocations lists every held address, sorted.
func (a *Allocator) Allocations() ([]Allocation, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.list()
}

func (a *Allocator) list() ([]Allocation, error) {
	entries, err := os.ReadDir(a.dir)
	if err != nil {
		return nil, err
	}
	var out []Allocation
	for _, e := range entries {
		ip, err := netip.ParseAddr(e.Name())
		if err != nil {
			continue
		}
		var o Owner
		if data, err := os.ReadFile(filepath.Join(a.dir, e.Name())); err == nil {
			_ = json.Unmarshal(data, &o)
		}
		out = append(out, Allocation{IP: ip, Owner: o})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].IP.Less(out[j].IP) })
	return out, nil
}
