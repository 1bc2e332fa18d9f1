package dns

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/miekg/dns"

	"github.com/weft-net/weft/dns/dnstest"
)

// fullAnswer is what the full path sends over UDP for req: Answer, truncated to the
// client's size, packed; nil for what is dropped.
func fullAnswer(t testing.TB, a *Answerer, req []byte) []byte {
	m := new(dns.Msg)
	if err := m.Unpack(req); err != nil || m.Response {
		return nil
	}
	resp := a.Answer(m)
	resp.Truncate(udpSize(m))
	b, err := resp.Pack()
	if err != nil {
		t.Fatalf("the answer to %v does not pack: %v", m.Question, err)
	}
	return b
}

// variant is req with another ID and every header bit a query may carry flipped: RD, CD,
// and the ones an answer must not depend on (AA, TC, Z, AD).
func variant(req []byte) []byte {
	v := bytes.Clone(req)
	if len(v) >= 4 {
		v[0], v[1] = v[0]^0x5a, v[1]^0xa5
		v[2] ^= 0x01 | 0x04 | 0x02
		v[3] ^= 0x10 | 0x40 | 0x20
	}
	return v
}

// The fast path answers byte for byte what the full path answers, the first time (it packs
// and keeps the answer) and again from what it kept, for another ID and header bits.
func TestUDPAnswersFromTheCacheEqualTheFullPath(t *testing.T) {
	a := testZone()
	var queries [][]byte
	for _, name := range []string{"web.shop.svc.clusterset.local.", "WEB.Shop.svc.clusterset.local.",
		"_http._tcp.web.shop.svc.clusterset.local.", "db.shop.svc.clusterset.local.", "nope.shop.svc.clusterset.local.",
		"example.com.", "clusterset.local.", "dns-version.clusterset.local."} {
		for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeSRV, dns.TypeTXT, dns.TypeSOA} {
			for _, edns := range []uint16{0, 512, 1232, 4096} {
				q := dnstest.Query(name, qtype)
				if edns > 0 {
					q.SetEdns0(edns, edns == 4096)
				}
				b, err := q.Pack()
				if err != nil {
					t.Fatal(err)
				}
				queries = append(queries, b)
			}
		}
	}
	s := &udpScratch{}
	for _, q := range queries {
		if _, plain := cacheKey(q, nil); !plain {
			t.Fatalf("a plain query takes the full path: %x", q)
		}
		for i, req := range [][]byte{q, q, variant(q)} {
			got, want := a.answerUDP(req, s), fullAnswer(t, a, req)
			if !bytes.Equal(got, want) {
				m := new(dns.Msg)
				_ = m.Unpack(req)
				t.Fatalf("answer %d to %v differs from the full path:\n%x\n%x", i+1, m.Question, got, want)
			}
		}
	}
	if n := len(a.snap().answers.m); n != len(queries) {
		t.Errorf("%d answers kept for %d distinct questions", n, len(queries))
	}
}

// A new zone snapshot starts with no kept answers: a name answered from the old one gets
// the new one's records at once.
func TestUDPAnswersFollowTheZone(t *testing.T) {
	a := testZone()
	req, _ := dnstest.Query("web.shop.svc.clusterset.local.", dns.TypeA).Pack()
	s := &udpScratch{}
	for range 2 {
		a.answerUDP(req, s)
	}
	a.Set(NewZone([]Service{{Namespace: "shop", Name: "web", Type: ClusterSetIP, IPs: []netip.Addr{netip.MustParseAddr("10.96.0.99")}}}))
	m := new(dns.Msg)
	if err := m.Unpack(a.answerUDP(req, s)); err != nil {
		t.Fatal(err)
	}
	if got := dnstest.Records(m); got != "A 10.96.0.99" {
		t.Errorf("after the zone changed: %q, want A 10.96.0.99", got)
	}
	a.Set(NewZone(nil))
	if err := m.Unpack(a.answerUDP(req, s)); err != nil || m.Rcode != dns.RcodeNameError {
		t.Errorf("after the service went: rcode %s (%v), want NXDOMAIN", dns.RcodeToString[m.Rcode], err)
	}
}

// Queries the fast path must not take.
func TestCacheKeyRefusesUnusualQueries(t *testing.T) {
	plain, _ := dnstest.Query("web.shop.svc.clusterset.local.", dns.TypeA).Pack()
	edns := dnstest.Query("web.shop.svc.clusterset.local.", dns.TypeA)
	edns.SetEdns0(1232, false)
	withOPT, _ := edns.Pack()
	set := func(b []byte, i int, v byte) []byte { b = bytes.Clone(b); b[i] = v; return b }
	for name, b := range map[string][]byte{
		"a response":          set(plain, 2, plain[2]|0x80),
		"a NOTIFY":            set(plain, 2, plain[2]|4<<3),
		"two questions":       set(plain, 5, 2),
		"an answer record":    set(plain, 7, 1),
		"an authority record": set(plain, 9, 1),
		"two additional":      set(withOPT, 11, 2),
		"an additional not OPT": func() []byte {
			b := bytes.Clone(withOPT)
			b[len(plain)+2] = 1 // TYPE 41 → 1
			return b
		}(),
		"trailing bytes":      append(bytes.Clone(plain), 0),
		"OPT with bad length": withOPT[:len(withOPT)-1],
		"a pointer as name":   append(append(bytes.Clone(plain[:12]), 0xc0, 0x0c), plain[len(plain)-4:]...),
		"a cut name":          plain[:20],
		"a header only":       plain[:12],
	} {
		if _, ok := cacheKey(b, nil); ok {
			t.Errorf("%s takes the fast path", name)
		}
	}
	// Responses get no answer at all (no reflection loops).
	if got := testZone().answerUDP(set(plain, 2, plain[2]|0x80), &udpScratch{}); got != nil {
		t.Errorf("a response was answered: %x", got)
	}
}

func BenchmarkAnswerUDP(b *testing.B) {
	a := testZone()
	req, _ := dnstest.Query("web.shop.svc.clusterset.local.", dns.TypeA).Pack()
	s := &udpScratch{}
	b.ReportAllocs()
	for b.Loop() {
		a.answerUDP(req, s)
	}
}
