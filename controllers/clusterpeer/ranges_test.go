package clusterpeer

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

func TestFirstOverlap(t *testing.T) {
	own := append(ranges("this cluster", "pod", []string{"10.244.0.0/16", "fd00:10:244::/56"}),
		ranges("this cluster", "service", []string{"10.96.0.0/16"})...)
	for _, c := range []struct {
		peer []string
		want string
	}{
		{[]string{"10.245.0.0/16"}, ""},
		{[]string{"10.244.128.0/17"}, "peer east's pod range 10.244.128.0/17 / this cluster's pod range 10.244.0.0/16"},
		{[]string{"10.0.0.0/8"}, "peer east's pod range 10.0.0.0/8 / this cluster's pod range 10.244.0.0/16"},
		{[]string{"10.245.0.0/16", "fd00:10:244:1::/64"}, "peer east's pod range fd00:10:244:1::/64 / this cluster's pod range fd00:10:244::/56"},
		{[]string{"10.96.7.0/24"}, "peer east's pod range 10.96.7.0/24 / this cluster's service range 10.96.0.0/16"},
		{[]string{"not a cidr"}, ""},
	} {
		p, o, ok := firstOverlap(ranges("peer east", "pod", c.peer), own)
		got := ""
		if ok {
			got = p.String() + " / " + o.String()
		}
		if got != c.want {
			t.Errorf("%v: got %q, want %q", c.peer, got, c.want)
		}
	}
}

func TestPrecedes(t *testing.T) {
	at := func(name string, sec int) *fabricv1.ClusterPeer {
		return &fabricv1.ClusterPeer{ObjectMeta: metav1.ObjectMeta{Name: name,
			CreationTimestamp: metav1.NewTime(time.Unix(int64(sec), 0))}}
	}
	if !precedes(at("b", 1), at("a", 2)) || precedes(at("a", 2), at("b", 1)) {
		t.Error("the older peer must keep its ranges")
	}
	if !precedes(at("a", 1), at("b", 1)) || precedes(at("b", 1), at("a", 1)) {
		t.Error("same age: the name that sorts first must keep its ranges")
	}
}
