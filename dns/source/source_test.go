package source_test

import (
	"testing"

	mdns "github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	mcsv1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/weft-net/weft/dns"
	"github.com/weft-net/weft/dns/dnstest"
	"github.com/weft-net/weft/dns/source"
)

func TestZoneFromImports(t *testing.T) {
	imports := []mcsv1.ServiceImport{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
			Spec: mcsv1.ServiceImportSpec{Type: mcsv1.ClusterSetIP, IPs: []string{"10.96.0.20"},
				Ports: []mcsv1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db"},
			Spec: mcsv1.ServiceImportSpec{Type: mcsv1.Headless, Ports: []mcsv1.ServicePort{{Name: "pg", Protocol: corev1.ProtocolTCP, Port: 5432}}}},
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
	a := dns.NewAnswerer("clusterset.local", 5)
	a.Set(source.ZoneFrom(imports, []discoveryv1.EndpointSlice{slice("east", true, "10.244.1.5"), slice("west", false, "10.245.9.9"), slice("west", true, "10.245.2.7")}))
	if a.Zone().Len() != 2 {
		t.Errorf("zone has %d services, want 2", a.Zone().Len())
	}
	for name, want := range map[string]string{
		"web.shop.svc.clusterset.local.":                  "A 10.96.0.20",
		"db.shop.svc.clusterset.local.":                   "A 10.244.1.5; A 10.245.2.7",
		"10-244-1-5.east.db.shop.svc.clusterset.local.":   "A 10.244.1.5",
		"_pg._tcp.db.shop.svc.clusterset.local.":          "",
		"_http._tcp.web.shop.svc.clusterset.local.":       "",
		"10-245-9-9.west.db.shop.svc.clusterset.local.":   "",
		"nothing-here.east.db.shop.svc.clusterset.local.": "",
	} {
		m := a.Answer(dnstest.Query(name, mdns.TypeA))
		if got := dnstest.Records(m); got != want {
			t.Errorf("%s A: %q, want %q", name, got, want)
		}
	}
	srv := a.Answer(dnstest.Query("_pg._tcp.db.shop.svc.clusterset.local.", mdns.TypeSRV))
	if got := dnstest.Records(srv); got != "SRV 0 100 15432 10-244-1-5.east.db.shop.svc.clusterset.local.; SRV 0 100 15432 10-245-2-7.west.db.shop.svc.clusterset.local." {
		t.Errorf("SRV of the headless service: %q", got)
	}
}
