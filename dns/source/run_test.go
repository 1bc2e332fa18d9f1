package source_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	mcsv1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/weft-net/weft/dns/source"
	"github.com/weft-net/weft/internal/testenv"
)

// weft-dns against a real API server: names follow the ServiceImports and EndpointSlices
// as they come and go.
func TestRunFollowsImports(t *testing.T) {
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	ctx, cancel := context.WithCancel(context.Background())
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	data, _, err := env.User("weft-dns", "system:masters")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kubeconfig, data, 0o600); err != nil {
		t.Fatal(err)
	}
	port := testenv.FreePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	done := make(chan error, 1)
	go func() {
		done <- source.Run(ctx, source.Config{Kubeconfig: kubeconfig, Listen: addr, Domain: "clusterset.local", TTL: 5})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	resolve := func(name string, qtype uint16, want string) {
		t.Helper()
		testenv.Eventually(t, 20*time.Second, func() error {
			q := new(mdns.Msg)
			q.SetQuestion(name, qtype)
			m, _, err := (&mdns.Client{Timeout: time.Second}).Exchange(q, addr)
			if err != nil {
				return err
			}
			got := ""
			for _, rr := range m.Answer {
				switch r := rr.(type) {
				case *mdns.A:
					got += r.A.String() + " "
				case *mdns.SRV:
					got += fmt.Sprintf("%d:%s ", r.Port, r.Target)
				}
			}
			if got != want {
				return fmt.Errorf("%s: %q (rcode %s), want %q", name, got, mdns.RcodeToString[m.Rcode], want)
			}
			return nil
		})
	}
	c := env.Client
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}); err != nil {
		t.Fatal(err)
	}
	resolve("web.shop.svc.clusterset.local.", mdns.TypeA, "")
	si := &mcsv1.ServiceImport{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
		Spec: mcsv1.ServiceImportSpec{Type: mcsv1.ClusterSetIP, IPs: []string{"10.96.7.7"},
			Ports: []mcsv1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}}}}
	if err := c.Create(ctx, si); err != nil {
		t.Fatal(err)
	}
	resolve("web.shop.svc.clusterset.local.", mdns.TypeA, "10.96.7.7 ")
	resolve("_http._tcp.web.shop.svc.clusterset.local.", mdns.TypeSRV, "80:web.shop.svc.clusterset.local. ")

	db := &mcsv1.ServiceImport{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db"},
		Spec: mcsv1.ServiceImportSpec{Type: mcsv1.Headless, Ports: []mcsv1.ServicePort{{Name: "pg", Protocol: corev1.ProtocolTCP, Port: 5432}}}}
	slice := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db-east",
		Labels: map[string]string{mcsv1.LabelServiceName: "db", mcsv1.LabelSourceCluster: "east"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.244.1.5"}, Hostname: ptr.To("db-0"),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
		Ports: []discoveryv1.EndpointPort{{Name: ptr.To("pg"), Port: ptr.To[int32](5432), Protocol: ptr.To(corev1.ProtocolTCP)}}}
	if err := c.Create(ctx, db); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, slice); err != nil {
		t.Fatal(err)
	}
	resolve("db.shop.svc.clusterset.local.", mdns.TypeA, "10.244.1.5 ")
	resolve("db-0.east.db.shop.svc.clusterset.local.", mdns.TypeA, "10.244.1.5 ")
	resolve("_pg._tcp.db.shop.svc.clusterset.local.", mdns.TypeSRV, "5432:db-0.east.db.shop.svc.clusterset.local. ")

	if err := c.Delete(ctx, si); err != nil {
		t.Fatal(err)
	}
	resolve("web.shop.svc.clusterset.local.", mdns.TypeA, "")
	// And over TCP.
	q := new(mdns.Msg)
	q.SetQuestion("db.shop.svc.clusterset.local.", mdns.TypeA)
	if m, _, err := (&mdns.Client{Net: "tcp", Timeout: time.Second}).Exchange(q, addr); err != nil || len(m.Answer) != 1 {
		t.Errorf("over TCP: %v %v", m, err)
	}
}
