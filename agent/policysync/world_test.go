package policysync

import (
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weft-net/weft/agent/datapath"
	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

func TestWorld(t *testing.T) {
	pod := func(ns, name, ip string, mut ...func(*corev1.Pod)) corev1.Pod {
		p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: "uid-" + "name", Labels: map[string]string{"app": name}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning}}
		if ip != "" {
			p.Status.PodIPs = []corev1.PodIP{{IP: ip}}
		}
		for _, m := range mut {
			m(&p)
		}
		return p
	}
	in := Inputs{
		Pods: []corev1.Pod{
			// On this node; the API does not show its address yet.
			pod("prod", "fresh", "", func(p *corev1.Pod) {
				p.Spec.Containers = []corev1.Container{{Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {ContainerPort: 9}}}}
			}),
			pod("prod", "remote", "10.244.2.7"),
			pod("kube-system", "hostnet", "172.30.0.11", func(p *corev1.Pod) { p.Spec.HostNetwork = true }),
			pod("prod", "done", "10.244.2.9", func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }),
		},
		Namespaces: []corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "prod", Labels: map[string]string{"env": "prod"}}}},
		Peers: []fabricv1.ClusterPeer{{Spec: fabricv1.ClusterPeerSpec{ClusterID: "west"},
			Status: fabricv1.ClusterPeerStatus{PodCIDRs: []string{"10.245.0.0/16"}, ServiceCIDRs: []string{"10.97.0.0/16"}}}},
		Local: []datapath.Pod{{Namespace: "prod", Name: "fresh", UID: "uid-name", IPs: []netip.Prefix{netip.MustParsePrefix("10.244.1.5/24")}}},
	}
	w, local := World(in)
	if len(local) != 1 || local[0].IP != netip.MustParseAddr("10.244.1.5") || local[0].Labels["app"] != "fresh" ||
		len(local[0].Ports) != 1 || local[0].Ports[0].Port != 8080 || local[0].Ports[0].Protocol != corev1.ProtocolTCP {
		t.Errorf("local pods %+v", local)
	}
	var names []string
	for _, p := range w.Pods {
		names = append(names, p.Name)
	}
	if len(w.Pods) != 2 || w.Pods[1].Name != "remote" {
		t.Errorf("pods %v: want the local pod and the remote one (no host-network, no finished pod)", names)
	}
	if w.Namespaces["prod"]["env"] != "prod" {
		t.Errorf("namespaces %v", w.Namespaces)
	}
	if got := w.Clusters["west"]; len(got) != 2 {
		t.Errorf("cluster west: %v", got)
	}
	// A local pod whose API object is another incarnation (another UID) gets no labels.
	in.Local[0].UID = "uid-other"
	if _, local := World(in); local[0].Labels != nil {
		t.Errorf("labels of another incarnation: %v", local[0].Labels)
	}
}

func TestRealizedPoliciesRoundTrip(t *testing.T) {
	ps := []fabricv1.FabricPolicy{{ObjectMeta: metav1.ObjectMeta{Name: "b", Generation: 3}}, {ObjectMeta: metav1.ObjectMeta{Name: "a", Generation: 12}}}
	s := fabricv1.RealizedPoliciesOf(ps)
	if len(s) != 2 || s[0] != (fabricv1.RealizedPolicy{Name: "a", Generation: 12}) || s[1] != (fabricv1.RealizedPolicy{Name: "b", Generation: 3}) {
		t.Errorf("RealizedPoliciesOf = %v, want a=12 then b=3", s)
	}
	st := fabricv1.FabricNodeStatus{RealizedPolicies: s}
	if m := st.RealizedGenerations(); m["a"] != 12 || m["b"] != 3 || len(m) != 2 {
		t.Errorf("RealizedGenerations = %v", m)
	}
}
