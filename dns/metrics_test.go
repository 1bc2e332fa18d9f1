package dns

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/weft-net/weft/internal/metricstest"
)

// The server counts every answer by query type and response code, over UDP (the fast path,
// cached or not) and TCP, with its latency; the zone's size and age are read when scraped.
func TestStatsCountAnswers(t *testing.T) {
	a := NewAnswerer("clusterset.local", 5)
	a.Set(NewZone([]Service{{Namespace: "shop", Name: "web", Type: ClusterSetIP, IPs: []netip.Addr{mustAddr("10.96.0.20")}},
		{Namespace: "shop", Name: "db", Type: ClusterSetIP, IPs: []netip.Addr{mustAddr("10.96.0.21")}}}))
	stats := NewStats(a)
	ad := serveOnLoopback(t, a)
	ask := func(network string, addr net.Addr, name string, qtype uint16) int {
		t.Helper()
		q := new(dns.Msg)
		q.SetQuestion(name, qtype)
		m, _, err := (&dns.Client{Net: network, Timeout: 2 * time.Second}).Exchange(q, addr.String())
		if err != nil {
			t.Fatalf("%s %s: %v", network, name, err)
		}
		return m.Rcode
	}
	ask("udp", ad[0], "web.shop.svc.clusterset.local.", dns.TypeA)
	ask("udp", ad[0], "web.shop.svc.clusterset.local.", dns.TypeA) // from the answer cache
	ask("udp", ad[0], "gone.shop.svc.clusterset.local.", dns.TypeA)
	ask("udp", ad[0], "kubernetes.default.svc.cluster.local.", dns.TypeA)
	ask("tcp", ad[1], "web.shop.svc.clusterset.local.", dns.TypeSRV)
	ask("udp", ad[0], "web.shop.svc.clusterset.local.", dns.TypeMX)

	got := metricstest.Values(t, stats)
	for key, want := range map[string]float64{
		`weft_dns_queries_total{rcode="NOERROR",type="A"}`:     2,
		`weft_dns_queries_total{rcode="NXDOMAIN",type="A"}`:    1,
		`weft_dns_queries_total{rcode="REFUSED",type="A"}`:     1,
		`weft_dns_queries_total{rcode="NOERROR",type="SRV"}`:   1,
		`weft_dns_queries_total{rcode="NOERROR",type="other"}`: 1,
		"weft_dns_request_duration_seconds_count":              6,
		"weft_dns_services": 2,
	} {
		if got[key] != want {
			t.Errorf("%s = %v, want %v (all: %v)", key, got[key], want, got)
		}
	}
	if age, ok := got["weft_dns_zone_age_seconds"]; !ok || age < 0 || age > 60 {
		t.Errorf("weft_dns_zone_age_seconds = %v (present %t)", age, ok)
	}
}

func TestQuestionType(t *testing.T) {
	q := new(dns.Msg)
	q.SetQuestion("web.shop.svc.clusterset.local.", dns.TypeSRV)
	b, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	if got := questionType(b); got != dns.TypeSRV {
		t.Errorf("questionType = %d, want SRV", got)
	}
	for _, short := range [][]byte{nil, b[:12], b[:len(b)-3]} {
		if got := questionType(short); got != 0 {
			t.Errorf("questionType of %d bytes = %d, want 0", len(short), got)
		}
	}
}
