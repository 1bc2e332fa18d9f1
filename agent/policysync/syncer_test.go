package policysync

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/weft-net/weft/agent/datapath"
	fakedp "github.com/weft-net/weft/agent/datapath/fake"
	"github.com/weft-net/weft/agent/policy/oracle"
	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// slowDatapath takes 50 ms to apply a policy, and counts how often it is asked to.
type slowDatapath struct {
	*fakedp.Datapath
	applied atomic.Int32
}

func (d *slowDatapath) SetPolicy(ctx context.Context, p datapath.Policy) error {
	time.Sleep(50 * time.Millisecond)
	d.applied.Add(1)
	return d.Datapath.SetPolicy(ctx, p)
}

// Answers that arrive together are learnt in few policy updates, each released once an
// update allowing its addresses is applied; answers for names no rule of the pod names, or
// to pods without FQDN rules, cost no update.
func TestLearnDNSAppliesAnswersTogether(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := fabricv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	client := netip.MustParseAddr("10.0.0.5")
	other := netip.MustParseAddr("10.0.0.6")
	cn := &fabricv1.ClusterNetwork{ObjectMeta: metav1.ObjectMeta{Name: "default"},
		Status: fabricv1.ClusterNetworkStatus{DNSResolvers: []string{"10.96.0.10"}}}
	pod := func(name string, ip netip.Addr) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: name, UID: "uid-" + "name", Labels: map[string]string{"app": name}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIPs: []corev1.PodIP{{IP: ip.String()}}}}
	}
	reader := fake.NewClientBuilder().WithScheme(scheme).WithObjects(cn,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "prod"}}, pod("client", client), pod("other", other),
		&fabricv1.Tier{ObjectMeta: metav1.ObjectMeta{Name: "application"}, Spec: fabricv1.TierSpec{Priority: 250}},
		&fabricv1.FabricPolicy{ObjectMeta: metav1.ObjectMeta{Name: "apis"}, Spec: fabricv1.FabricPolicySpec{Tier: "application", Priority: 1,
			AppliedTo: []fabricv1.PolicyTarget{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}}}},
			Egress: []fabricv1.PolicyRule{
				{Name: "example", Action: fabricv1.ActionAllow, To: []fabricv1.PolicyPeer{{FQDN: "*.example.com"}}},
				{Name: "rest", Action: fabricv1.ActionDrop},
			}}}).Build()
	dp := &slowDatapath{Datapath: fakedp.New()}
	for _, p := range []struct {
		name string
		ip   netip.Addr
	}{{"client", client}, {"other", other}} {
		if _, err := dp.AddPod(ctx, datapath.Pod{Key: datapath.PodKey{ContainerID: p.name, IfName: "eth0"}, Namespace: "prod", Name: p.name, Netns: "/run/netns/" + p.name,
			IPs: []netip.Prefix{netip.PrefixFrom(p.ip, 32)}}); err != nil {
			t.Fatal(err)
		}
	}
	s := &Syncer{Node: "n1", Datapath: dp, Reader: reader, Log: klog.Background()}
	go s.Run(ctx)
	deadline := time.Now().Add(10 * time.Second)
	for {
		p := dp.Policy()
		if slices.Equal(p.DNSPods, []netip.Addr{client}) && slices.Equal(p.DNSServers, []netip.Addr{netip.MustParseAddr("10.96.0.10")}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the policy holds DNS answers of %v from %v, want %v's from 10.96.0.10", p.DNSPods, p.DNSServers, client)
		}
		time.Sleep(10 * time.Millisecond)
	}
	allows := func(addr netip.Addr) bool {
		return dp.Policy().Pipeline.Decide(oracle.Conn{Src: client, Dst: addr, Protocol: corev1.ProtocolTCP, Port: 443}) == fabricv1.ActionAllow
	}

	before := dp.applied.Load()
	s.LearnDNS(ctx, datapath.DNSAnswer{Pod: client, Records: []datapath.DNSRecord{{Name: "evil.test", Addr: netip.MustParseAddr("203.0.113.1"), TTL: time.Minute}}})
	s.LearnDNS(ctx, datapath.DNSAnswer{Pod: other, Records: []datapath.DNSRecord{{Name: "api.example.com", Addr: netip.MustParseAddr("203.0.113.2"), TTL: time.Minute}}})
	if n := dp.applied.Load() - before; n != 0 {
		t.Errorf("answers that teach nothing caused %d policy updates", n)
	}

	const answers = 200
	before = dp.applied.Load()
	var wg sync.WaitGroup
	var notAllowed atomic.Int32
	for i := range answers {
		wg.Go(func() {
			addr := netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)})
			s.LearnDNS(ctx, datapath.DNSAnswer{Pod: client, Records: []datapath.DNSRecord{{Name: fmt.Sprintf("n%d.example.com", i), Addr: addr, TTL: time.Minute}}})
			if !allows(addr) {
				notAllowed.Add(1)
			}
		})
	}
	wg.Wait()
	updates := dp.applied.Load() - before
	t.Logf("%d answers arriving together: %d policy updates", answers, updates)
	if n := notAllowed.Load(); n != 0 {
		t.Errorf("%d of %d answers were released before a policy allowing their address was applied", n, answers)
	}
	if updates > answers/10 {
		t.Errorf("%d answers arriving together took %d policy updates, want them shared", answers, updates)
	}
}
