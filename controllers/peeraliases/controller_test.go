package peeraliases

import (
	"fmt"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

func TestPublished(t *testing.T) {
	peer := func(name, id string, aliases ...fabricv1.CIDRAlias) fabricv1.ClusterPeer {
		return fabricv1.ClusterPeer{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: fabricv1.ClusterPeerSpec{ClusterID: id},
			Status: fabricv1.ClusterPeerStatus{Aliases: aliases}}
	}
	a := fabricv1.CIDRAlias{CIDR: "10.244.0.0/16", Alias: "100.64.0.0/16"}
	b := fabricv1.CIDRAlias{CIDR: "10.244.0.0/16", Alias: "100.65.0.0/16"}
	got := Published([]fabricv1.ClusterPeer{peer("z", "c3", a), peer("plain", "c2"), peer("b", "c4", b), peer("a", "c4", a)})
	if want := "[{c3 [{10.244.0.0/16 100.64.0.0/16}]} {c4 [{10.244.0.0/16 100.64.0.0/16}]}]"; fmt.Sprint(got) != want {
		t.Errorf("Published = %v, want %s", got, want)
	}
}
