package dns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	mcsv1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
)

func TestZoneFromImports(t *testing.T) {
	imports := []mcsv1.ServiceImport{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
			Spec: mcsv1.ServiceImportSpec{Type: mcsv1.ClusterSetIP, IPs: []string{"10.96.0.20"},
				Ports: []mcsv1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db"},
			Spec: mcsv1.ServiceImportSpec{Type: mcsv1.Headless, Ports: []mcsv1.ServicePort{{Name: "pg", Protocol: corev1.ProtocolTCP, Port: 5432}}}},
		// An export record in the operator's namespace is no import.
		{ObjectMeta: metav1.ObjectMeta{Namespace: "weft-system", Name: "shop.web", Labels: map[string]string{recordLabel: "true"}},
			Spec: mcsv1.ServiceImportSpec{Type: mcsv1.ClusterSetIP}},
	}
	slice := func(cluster string, ready bool, addrs ...string) discoveryv1.EndpointSlice {
		s := discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db-" + cluster,
			Labels: map[string]string{mcsv1.LabelServiceName: "db", mcsv1.LabelSourceCluster: cluster}},
			Ports: []discoveryv1.EndpointPort{{Name: ptr.To("pg"), Port: ptr.To[int32](15432), Protocol: ptr.To(corev1.ProtocolTCP)}}}
		for _, a := range addrs {
			s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{a}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready)}})
		}
		return s
	}
	a := NewAnswerer("clusterset.local", 5)
	a.Set(ZoneFrom(imports, []discoveryv1.EndpointSlice{slice("east", true, "10.244.1.5"), slice("west", false, "10.245.9.9"), slice("west", true, "10.245.2.7")}))
	if a.Zone().Len() != 2 {
		t.Errorf("zone has %d services, want 2 (the record skipped)", a.Zone().Len())
	}
	for name, want := range map[string]string{
		"web.shop.svc.clusterset.local.":                  "A 10.96.0.20",
		"db.shop.svc.clusterset.local.":                   "A 10.244.1.5; A 10.245.2.7",
		"10-244-1-5.east.db.shop.svc.clusterset.local.":   "A 10.244.1.5",
		"shop.web.weft-system.svc.clusterset.local.":      "",
		"_pg._tcp.db.shop.svc.clusterset.local.":          "",
		"_http._tcp.web.shop.svc.clusterset.local.":       "",
		"10-245-9-9.west.db.shop.svc.clusterset.local.":   "",
		"nothing-here.east.db.shop.svc.clusterset.local.": "",
	} {
		m := ask(a, name, dns.TypeA)
		if got := records(m); got != want {
			t.Errorf("%s A: %q, want %q", name, got, want)
		}
	}
	srv := ask(a, "_pg._tcp.db.shop.svc.clusterset.local.", dns.TypeSRV)
	if got := records(srv); got != "SRV 0 100 15432 10-244-1-5.east.db.shop.svc.clusterset.local.; SRV 0 100 15432 10-245-2-7.west.db.shop.svc.clusterset.local." {
		t.Errorf("SRV of the headless service: %q", got)
	}
}

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
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
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
	if m := query("udp", ad[0].String(), "web.shop.svc.clusterset.local."); records(m) != "A 10.96.0.20" {
		t.Errorf("UDP: %v", m)
	}
	if m := query("tcp", ad[1].String(), "web.shop.svc.clusterset.local."); records(m) != "A 10.96.0.20" {
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
