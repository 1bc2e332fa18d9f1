package nodeipam

import (
	"fmt"
	"math/big"
	"net/netip"
	"strings"
)

// blockAt returns the i-th block of size bits inside pool.
func blockAt(pool netip.Prefix, bits int, i *big.Int) (netip.Prefix, bool) {
	width := pool.Addr().BitLen()
	base := new(big.Int).SetBytes(pool.Masked().Addr().AsSlice())
	offset := new(big.Int).Lsh(i, uint(width-bits))
	n := new(big.Int).Add(base, offset)
	raw := n.FillBytes(make([]byte, width/8))
	addr, ok := netip.AddrFromSlice(raw)
	if !ok {
		return netip.Prefix{}, false
	}
	p := netip.PrefixFrom(addr, bits)
	return p, pool.Contains(addr)
}

// nextFree returns the first block of size bits in pool that is not used.
func nextFree(pool netip.Prefix, bits int, used map[netip.Prefix]bool) (netip.Prefix, error) {
	if bits < pool.Bits() || bits > pool.Addr().BitLen() {
		return netip.Prefix{}, fmt.Errorf("node mask size /%d does not fit pool %s", bits, pool)
	}
	count := new(big.Int).Lsh(big.NewInt(1), uint(bits-pool.Bits()))
	limit := count
	if limit.Cmp(big.NewInt(1<<20)) > 0 {
		limit = big.NewInt(1 << 20) // far more nodes than any cluster has
	}
	for i := big.NewInt(0); i.Cmp(limit) < 0; i.Add(i, big.NewInt(1)) {
		b, ok := blockAt(pool, bits, i)
		if ok && !used[b] {
			return b, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("all %s blocks of %s are taken", count, pool)
}

func format(blocks []netip.Prefix) string {
	s := make([]string, len(blocks))
	for i, b := range blocks {
		s[i] = b.String()
	}
	return strings.Join(s, ",")
}
