package packet

import (
	"errors"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Record is an address a DNS answer gave a name.
type Record struct {
	Name string // lower case, no trailing dot
	Addr netip.Addr
	TTL  time.Duration
}

// DNSAnswer reads the IPv4 addresses of a DNS response carried in a UDP frame. Each name of
// a CNAME chain from the question gets the chain's addresses, with the smallest TTL on the
// way.
func DNSAnswer(frame []byte) ([]Record, error) {
	_, l4, err := ip4(frame)
	if err != nil {
		return nil, err
	}
	if frame[ethLen+9] != ProtoUDP || len(l4) < 8 {
		return nil, errors.New("not UDP")
	}
	end := int(l4[4])<<8 | int(l4[5])
	if end < 8 || end > len(l4) {
		end = len(l4)
	}
	m := new(dns.Msg)
	if err := m.Unpack(l4[8:end]); err != nil {
		return nil, err
	}
	if !m.Response || m.Rcode != dns.RcodeSuccess {
		return nil, nil
	}
	norm := func(n string) string { return strings.ToLower(strings.TrimSuffix(n, ".")) }
	cname := map[string]string{}
	type addr struct {
		a   netip.Addr
		ttl uint32
	}
	addrs := map[string][]addr{}
	cnameTTL := map[string]uint32{}
	for _, rr := range m.Answer {
		switch r := rr.(type) {
		case *dns.CNAME:
			cname[norm(r.Hdr.Name)] = norm(r.Target)
			cnameTTL[norm(r.Hdr.Name)] = r.Hdr.Ttl
		case *dns.A:
			if a, ok := netip.AddrFromSlice(r.A.To4()); ok {
				addrs[norm(r.Hdr.Name)] = append(addrs[norm(r.Hdr.Name)], addr{a, r.Hdr.Ttl})
			}
		}
	}
	var out []Record
	names := map[string]bool{}
	for _, q := range m.Question {
		names[norm(q.Name)] = true
	}
	for n := range addrs {
		names[n] = true
	}
	for n := range names {
		// Follow the chain (at most 8 links) to the addresses.
		minTTL := ^uint32(0)
		cur := n
		for range 8 {
			next, ok := cname[cur]
			if !ok {
				break
			}
			minTTL = min(minTTL, cnameTTL[cur])
			cur = next
		}
		for _, a := range addrs[cur] {
			out = append(out, Record{Name: n, Addr: a.a, TTL: time.Duration(min(minTTL, a.ttl)) * time.Second})
		}
	}
	return out, nil
}
