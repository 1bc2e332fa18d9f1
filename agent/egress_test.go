package agent

import (
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/netnstest"
)

func egressCluster(except ...fabricv1.CIDR) *fabricv1.ClusterNetwork {
	return &fabricv1.ClusterNetwork{ObjectMeta: metav1.ObjectMeta{Name: fabricv1.ClusterNetworkName},
		Spec: fabricv1.ClusterNetworkSpec{ClusterID: "c1", PodCIDRs: []fabricv1.CIDR{"10.244.0.0/16", "fd00:10:244::/56"},
			ServiceCIDRs: []fabricv1.CIDR{"10.96.0.0/16"}, Egress: fabricv1.EgressSpec{ExceptCIDRs: except}}}
}

func egressPeer() fabricv1.ClusterPeer {
	p := fabricv1.ClusterPeer{ObjectMeta: metav1.ObjectMeta{Name: "c2"}}
	p.Status.PodCIDRs = []string{"10.245.0.0/16"}
	p.Status.ServiceCIDRs = []string{"10.97.0.0/16"}
	p.Status.Aliases = []fabricv1.CIDRAlias{{CIDR: "10.97.0.0/16", Alias: "100.65.0.0/16"}}
	return p
}

// TestEgressRules: the pods' IPv4 range is translated to anywhere but the fabric (its own
// ranges, the peers', the alias pool, the exceptions, nested ones folded into the wider);
// masquerade off leaves only the table's removal.
func TestEgressRules(t *testing.T) {
	script := egressRules(egressCluster("192.168.100.0/24", "10.96.5.0/24"), []fabricv1.ClusterPeer{egressPeer()})
	for _, want := range []string{
		"table ip weft-egress\ndelete table ip weft-egress\n",
		"set pods {\n\t\ttype ipv4_addr; flags interval;\n\t\telements = { 10.244.0.0/16 }",
		"elements = { 10.244.0.0/16, 10.245.0.0/16, 10.96.0.0/16, 10.97.0.0/16, 100.65.0.0/16, 192.168.100.0/24 }",
		"ct status dnat return",
		"masquerade",
	} {
		if !strings.Contains(script, want) {
			t.Errorf("script lacks %q:\n%s", want, script)
		}
	}
	if strings.Contains(script, "10.96.5.0/24") || strings.Contains(script, "fd00") {
		t.Errorf("a nested range or an IPv6 one is in the sets:\n%s", script)
	}
	off := egressCluster()
	off.Spec.Egress.Masquerade = ptr.To(false)
	if got := egressRules(off, nil); got != "table ip weft-egress\ndelete table ip weft-egress\n" {
		t.Errorf("masquerade off: %q, want the table removed only", got)
	}
}

// TestEgressMasqueradesTrafficLeavingTheCluster applies the table on a node namespace that
// routes between a pod and an outside host that routes the pod range back: without the
// table the outside host sees the pod's address; with it the node's; to an exception and to
// a peer's range the pod's again; removed, the pod's.
func TestEgressMasqueradesTrafficLeavingTheCluster(t *testing.T) {
	netnstest.RequireRoot(t)
	pod, node, outside := netnstest.New(t, "pod"), netnstest.New(t, "node"), netnstest.New(t, "out")
	netnstest.Link(t, pod, "eth0", "10.244.1.5/24", node, "veth-pod", "10.244.1.1/24")
	netnstest.Link(t, node, "eth0", "172.30.9.1/24", outside, "eth0", "172.30.9.2/24")
	pod.MustIP(t, "route", "add", "default", "via", "10.244.1.1")
	outside.MustIP(t, "route", "add", "10.244.0.0/16", "via", "172.30.9.1")
	outside.MustIP(t, "addr", "add", "10.245.0.9/32", "dev", "eth0") // a peer pod's address
	outside.MustIP(t, "addr", "add", "192.168.100.9/32", "dev", "eth0")
	pod.MustIP(t, "route", "add", "10.245.0.0/16", "via", "10.244.1.1")
	if out, err := node.Run("sysctl", "-w", "net.ipv4.ip_forward=1"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	node.MustIP(t, "route", "add", "10.245.0.0/16", "via", "172.30.9.2")
	node.MustIP(t, "route", "add", "192.168.100.0/24", "via", "172.30.9.2")
	apply := func(script string) {
		t.Helper()
		if out, err := node.RunStdin(script, "nft", "-f", "-"); err != nil {
			t.Fatalf("nft: %v: %s", err, out)
		}
	}
	seenAs := func(dst string) string {
		t.Helper()
		l, err := outside.Listen(net.JoinHostPort(dst, "8080"))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		from := make(chan string, 1)
		go func() {
			c, err := l.Accept()
			if err != nil {
				from <- err.Error()
				return
			}
			defer c.Close()
			_, _ = io.Copy(io.Discard, c)
			from <- netip.MustParseAddrPort(c.RemoteAddr().String()).Addr().String()
		}()
		c, err := pod.Dial(net.JoinHostPort(dst, "8080"), 5*time.Second)
		if err != nil {
			t.Fatalf("the pod dials %s: %v", dst, err)
		}
		_, _ = c.Write([]byte("hello"))
		c.Close()
		select {
		case f := <-from:
			return f
		case <-time.After(5 * time.Second):
			t.Fatalf("%s accepted nothing", dst)
			return ""
		}
	}
	if got := seenAs("172.30.9.2"); got != "10.244.1.5" {
		t.Fatalf("without the table the outside host sees %s, want the pod's 10.244.1.5", got)
	}
	apply(egressRules(egressCluster("192.168.100.0/24"), []fabricv1.ClusterPeer{egressPeer()}))
	for dst, want := range map[string]string{"172.30.9.2": "172.30.9.1", "192.168.100.9": "10.244.1.5", "10.245.0.9": "10.244.1.5"} {
		if got := seenAs(dst); got != want {
			t.Errorf("with the table, %s sees the pod's connection from %s, want %s", dst, got, want)
		}
	}
	off := egressCluster()
	off.Spec.Egress.Masquerade = ptr.To(false)
	apply(egressRules(off, nil))
	if got := seenAs("172.30.9.2"); got != "10.244.1.5" {
		t.Errorf("masquerade off: the outside host sees %s, want the pod's 10.244.1.5", got)
	}
}
