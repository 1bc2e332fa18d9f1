package dns

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/miekg/dns"

	"github.com/weft-net/weft/dns/dnstest"
)

func testZone() *Answerer {
	a := NewAnswerer("clusterset.local", 5)
	a.Set(NewZone([]Service{
		{Namespace: "shop", Name: "web", Type: ClusterSetIP,
			IPs:   []netip.Addr{netip.MustParseAddr("10.96.0.20"), netip.MustParseAddr("fd00::20")},
			Ports: []Port{{Name: "http", Protocol: "TCP", Port: 80}, {Protocol: "UDP", Port: 53}}},
		{Namespace: "shop", Name: "db", Type: Headless, Ports: []Port{{Name: "pg", Protocol: "TCP", Port: 5432}},
			Endpoints: []Endpoint{
				{Addrs: []netip.Addr{netip.MustParseAddr("10.244.1.5")}, Hostname: "db-0", Cluster: "east",
					Ports: []Port{{Name: "pg", Protocol: "TCP", Port: 15432}}},
				{Addrs: []netip.Addr{netip.MustParseAddr("10.245.2.7")}, Cluster: "west"},
			}},
	}))
	return a
}

func TestAnswers(t *testing.T) {
	a := testZone()
	for _, c := range []struct {
		name    string
		qtype   uint16
		rcode   int
		want    string
		soa     bool // SOA in the authority section
		refused bool
	}{
		{"web.shop.svc.clusterset.local.", dns.TypeA, dns.RcodeSuccess, "A 10.96.0.20", false, false},
		{"WEB.Shop.svc.ClusterSet.Local.", dns.TypeA, dns.RcodeSuccess, "A 10.96.0.20", false, false},
		{"web.shop.svc.clusterset.local.", dns.TypeAAAA, dns.RcodeSuccess, "AAAA fd00::20", false, false},
		{"web.shop.svc.clusterset.local.", dns.TypeTXT, dns.RcodeSuccess, "", true, false},
		{"_http._tcp.web.shop.svc.clusterset.local.", dns.TypeSRV, dns.RcodeSuccess, "SRV 0 100 80 web.shop.svc.clusterset.local.", false, false},
		{"_http._udp.web.shop.svc.clusterset.local.", dns.TypeSRV, dns.RcodeNameError, "", true, false},
		{"_nope._tcp.web.shop.svc.clusterset.local.", dns.TypeSRV, dns.RcodeNameError, "", true, false},
		// Never <cluster>.<svc> for a ClusterSetIP Service.
		{"east.web.shop.svc.clusterset.local.", dns.TypeA, dns.RcodeNameError, "", true, false},
		{"db.shop.svc.clusterset.local.", dns.TypeA, dns.RcodeSuccess, "A 10.244.1.5; A 10.245.2.7", false, false},
		{"db-0.east.db.shop.svc.clusterset.local.", dns.TypeA, dns.RcodeSuccess, "A 10.244.1.5", false, false},
		{"10-245-2-7.west.db.shop.svc.clusterset.local.", dns.TypeA, dns.RcodeSuccess, "A 10.245.2.7", false, false},
		{"db-0.west.db.shop.svc.clusterset.local.", dns.TypeA, dns.RcodeNameError, "", true, false},
		{"east.db.shop.svc.clusterset.local.", dns.TypeA, dns.RcodeSuccess, "", true, false},
		{"_pg._tcp.db.shop.svc.clusterset.local.", dns.TypeSRV, dns.RcodeSuccess,
			"SRV 0 100 15432 db-0.east.db.shop.svc.clusterset.local.; SRV 0 100 5432 10-245-2-7.west.db.shop.svc.clusterset.local.", false, false},
		// SRV at the Service's name: every port (unnamed ones too).
		{"web.shop.svc.clusterset.local.", dns.TypeSRV, dns.RcodeSuccess,
			"SRV 0 100 53 web.shop.svc.clusterset.local.; SRV 0 100 80 web.shop.svc.clusterset.local.", false, false},
		{"db.shop.svc.clusterset.local.", dns.TypeSRV, dns.RcodeSuccess,
			"SRV 0 100 15432 db-0.east.db.shop.svc.clusterset.local.; SRV 0 100 5432 10-245-2-7.west.db.shop.svc.clusterset.local.", false, false},
		{"dns-version.clusterset.local.", dns.TypeTXT, dns.RcodeSuccess, `TXT "1.1.0"`, false, false},
		{"clusterset.local.", dns.TypeSOA, dns.RcodeSuccess, "SOA ns.dns.clusterset.local. hostmaster.clusterset.local. 1 7200 1800 86400 5", false, false},
		{"shop.svc.clusterset.local.", dns.TypeA, dns.RcodeSuccess, "", true, false},
		{"other.svc.clusterset.local.", dns.TypeA, dns.RcodeNameError, "", true, false},
		{"nope.shop.svc.clusterset.local.", dns.TypeA, dns.RcodeNameError, "", true, false},
		{"web.shop.pod.clusterset.local.", dns.TypeA, dns.RcodeNameError, "", true, false},
		{"example.com.", dns.TypeA, dns.RcodeRefused, "", false, true},
		{"web.shop.svc.cluster.local.", dns.TypeA, dns.RcodeRefused, "", false, true},
	} {
		m := a.Answer(dnstest.Query(c.name, c.qtype))
		if m.Rcode != c.rcode {
			t.Errorf("%s %s: rcode %s, want %s", c.name, dns.TypeToString[c.qtype], dns.RcodeToString[m.Rcode], dns.RcodeToString[c.rcode])
		}
		if got := dnstest.Records(m); got != c.want {
			t.Errorf("%s %s: answer %q, want %q", c.name, dns.TypeToString[c.qtype], got, c.want)
		}
		hasSOA := len(m.Ns) == 1 && m.Ns[0].Header().Rrtype == dns.TypeSOA
		if hasSOA != c.soa {
			t.Errorf("%s %s: authority %v, want SOA %v", c.name, dns.TypeToString[c.qtype], m.Ns, c.soa)
		}
		if m.Authoritative == c.refused || m.RecursionAvailable {
			t.Errorf("%s: AA=%v RA=%v", c.name, m.Authoritative, m.RecursionAvailable)
		}
		for _, rr := range m.Answer {
			if rr.Header().Ttl != 5 || rr.Header().Name != c.name && rr.Header().Rrtype != dns.TypeSOA {
				t.Errorf("%s: record %s: want TTL 5 and the name asked", c.name, rr)
			}
		}
	}
}

func TestEmptyZoneAndBadQueries(t *testing.T) {
	a := NewAnswerer("clusterset.local.", 5)
	if m := a.Answer(dnstest.Query("web.shop.svc.clusterset.local.", dns.TypeA)); m.Rcode != dns.RcodeNameError {
		t.Errorf("no zone yet: rcode %s", dns.RcodeToString[m.Rcode])
	}
	if m := a.Answer(dnstest.Query("svc.clusterset.local.", dns.TypeA)); m.Rcode != dns.RcodeNameError {
		t.Errorf("svc.<zone> of an empty zone: rcode %s", dns.RcodeToString[m.Rcode])
	}
	two := new(dns.Msg)
	two.Question = []dns.Question{{Name: "a.clusterset.local.", Qtype: dns.TypeA, Qclass: dns.ClassINET}, {Name: "b.clusterset.local.", Qtype: dns.TypeA, Qclass: dns.ClassINET}}
	if m := a.Answer(two); m.Rcode != dns.RcodeFormatError {
		t.Errorf("two questions: rcode %s", dns.RcodeToString[m.Rcode])
	}
	upd := new(dns.Msg)
	upd.SetUpdate("clusterset.local.")
	if m := a.Answer(upd); m.Rcode != dns.RcodeNotImplemented {
		t.Errorf("an update: rcode %s", dns.RcodeToString[m.Rcode])
	}
	chaos := new(dns.Msg)
	chaos.Question = []dns.Question{{Name: "web.shop.svc.clusterset.local.", Qtype: dns.TypeA, Qclass: dns.ClassCHAOS}}
	if m := a.Answer(chaos); m.Rcode != dns.RcodeRefused {
		t.Errorf("class CHAOS: rcode %s", dns.RcodeToString[m.Rcode])
	}
}

// FuzzAnswer feeds arbitrary wire messages to the UDP path: it never panics, answers what
// the full path answers (Answer, truncated, packed) byte for byte, and answers the same
// again from what it kept — also for another ID and header bits.
func FuzzAnswer(f *testing.F) {
	a := testZone()
	for _, name := range []string{"web.shop.svc.clusterset.local.", "_pg._tcp.db.shop.svc.clusterset.local.", "example.com.", "clusterset.local."} {
		q := new(dns.Msg)
		q.SetQuestion(name, dns.TypeA)
		q.SetEdns0(1232, false)
		b, _ := q.Pack()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s := &udpScratch{}
		for i, req := range [][]byte{b, b, variant(b)} {
			if got, want := a.answerUDP(req, s), fullAnswer(t, a, req); !bytes.Equal(got, want) {
				t.Fatalf("answer %d to %x:\n%x\nthe full path:\n%x", i+1, req, got, want)
			}
		}
	})
}

// A port number served over two protocols is one SRV record at the Service's name (an
// RRset holds no duplicates), for a ClusterSetIP and for each endpoint of a headless one.
func TestServiceSRVOncePerPortNumber(t *testing.T) {
	a := NewAnswerer("clusterset.local", 5)
	ports := []Port{{Name: "tcp", Protocol: "TCP", Port: 42}, {Name: "udp", Protocol: "UDP", Port: 42}}
	a.Set(NewZone([]Service{
		{Namespace: "ns", Name: "vip", Type: ClusterSetIP, IPs: []netip.Addr{netip.MustParseAddr("10.96.0.1")}, Ports: ports},
		{Namespace: "ns", Name: "hl", Type: Headless, Ports: ports, Endpoints: []Endpoint{
			{Addrs: []netip.Addr{netip.MustParseAddr("10.244.0.1")}, Cluster: "c1"},
			{Addrs: []netip.Addr{netip.MustParseAddr("10.244.0.2")}, Cluster: "c1"}}},
	}))
	for name, want := range map[string]string{
		"vip.ns.svc.clusterset.local.": "SRV 0 100 42 vip.ns.svc.clusterset.local.",
		"hl.ns.svc.clusterset.local.":  "SRV 0 100 42 10-244-0-1.c1.hl.ns.svc.clusterset.local.; SRV 0 100 42 10-244-0-2.c1.hl.ns.svc.clusterset.local.",
	} {
		if got := dnstest.Records(a.Answer(dnstest.Query(name, dns.TypeSRV))); got != want {
			t.Errorf("SRV %s: %q, want %q", name, got, want)
		}
	}
}
