package dns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/weft-net/weft/dns/dnstest"
)

// The server answers over UDP and TCP on loopback; a UDP answer too large for the client
// is truncated (TC), and the same question over TCP gets everything.
func TestServeUDPAndTCP(t *testing.T) {
	a := NewAnswerer("clusterset.local", 5)
	var eps []Endpoint
	for i := 0; i < 100; i++ {
		eps = append(eps, Endpoint{Addrs: []netip.Addr{mustAddr(fmt.Sprintf("10.244.%d.%d", i/250, i%250+1))}, Cluster: "east"})
	}
	a.Set(NewZone([]Service{{Namespace: "shop", Name: "big", Type: Headless, Endpoints: eps},
		{Namespace: "shop", Name: "web", Type: ClusterSetIP, IPs: []netip.Addr{mustAddr("10.96.0.20")}}}))
	ad := serveOnLoopback(t, a)
	query := func(net, addr, name string) *dns.Msg {
		t.Helper()
		c := &dns.Client{Net: net, Timeout: 2 * time.Second}
		q := new(dns.Msg)
		q.SetQuestion(name, dns.TypeA)
		m, _, err := c.Exchange(q, addr)
		if err != nil {
			t.Fatalf("%s %s: %v", net, name, err)
		}
		return m
	}
	if m := query("udp", ad[0].String(), "web.shop.svc.clusterset.local."); dnstest.Records(m) != "A 10.96.0.20" {
		t.Errorf("UDP: %v", m)
	}
	if m := query("tcp", ad[1].String(), "web.shop.svc.clusterset.local."); dnstest.Records(m) != "A 10.96.0.20" {
		t.Errorf("TCP: %v", m)
	}
	if m := query("udp", ad[0].String(), "big.shop.svc.clusterset.local."); !m.Truncated || len(m.Answer) >= 100 {
		t.Errorf("UDP answer of 100 addresses: truncated %v with %d records, want truncated", m.Truncated, len(m.Answer))
	}
	if m := query("tcp", ad[1].String(), "big.shop.svc.clusterset.local."); m.Truncated || len(m.Answer) != 100 {
		t.Errorf("TCP answer of 100 addresses: truncated %v with %d records, want all", m.Truncated, len(m.Answer))
	}
	if m := query("udp", ad[0].String(), "kubernetes.default.svc.cluster.local."); m.Rcode != dns.RcodeRefused {
		t.Errorf("another zone over UDP: %s, want REFUSED", dns.RcodeToString[m.Rcode])
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// serveOnLoopback serves a on a loopback port until the test ends and returns its UDP and
// TCP addresses.
func serveOnLoopback(t *testing.T, a *Answerer) [2]net.Addr {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan [2]net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, "127.0.0.1:0", a, func(u, tc net.Addr) { addrs <- [2]net.Addr{u, tc} }) }()
	var ad [2]net.Addr
	select {
	case ad = <-addrs:
	case err := <-done:
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ad
}
