package gateway

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"sort"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/statefile"
)

// LastKnown is what a gateway last read from its cluster's API server, kept on its node
// (StateDir/last-known.json) so that a gateway restarted while that API server cannot be
// read — stopped, restarting, partitioned — starts from it instead of waiting: the
// ClusterNetwork's spec (tunnel driver and port, ranges, datapath), the node's address and
// UID, and the ClusterPeers. It is used only until the API server answers; stale peer
// gateways in it cost nothing, since only those that answer health probes through their
// tunnel carry traffic.
type LastKnown struct {
	ClusterNetwork fabricv1.ClusterNetwork `json:"clusterNetwork"`
	NodeIP         netip.Addr              `json:"nodeIP"`
	NodeUID        types.UID               `json:"nodeUID"`
	Peers          []fabricv1.ClusterPeer  `json:"peers,omitempty"`
	SavedAt        time.Time               `json:"savedAt"`
}

// lastKnownFile is the file in the state directory.
const lastKnownFile = "last-known.json"

// startTimeout bounds how long a starting gateway waits for its cluster's API server
// before it starts from the state it last read (when it has one).
const startTimeout = 5 * time.Second

// LoadLastKnown reads the state kept in dir; nil (and no error) when there is none.
func LoadLastKnown(dir string) (*LastKnown, error) {
	path := filepath.Join(dir, lastKnownFile)
	var k LastKnown
	if found, err := statefile.ReadJSON(path, &k); !found || err != nil {
		return nil, err
	}
	if !k.NodeIP.IsValid() || k.ClusterNetwork.UID == "" {
		return nil, fmt.Errorf("%s: no node address or ClusterNetwork", path)
	}
	return &k, nil
}

// Save writes the state to dir in one step (a crash leaves the old file or the new one).
func (k *LastKnown) Save(dir string) error {
	k.SavedAt = time.Now().UTC().Truncate(time.Second)
	return statefile.PrivateJSON(filepath.Join(dir, lastKnownFile), k)
}

// staticMapper maps the kinds the gateway reads and writes (and the Events it records) to
// their resources and scopes, without asking the API server (discovery would fail while it
// is away). A kind missing here fails with "no matches for kind": TestClientsNeedNoAPIServer
// lists every kind the gateway uses.
func staticMapper() meta.RESTMapper {
	m := meta.NewDefaultRESTMapper(nil)
	for _, k := range []struct {
		gvk      schema.GroupVersionKind
		resource string
		scope    meta.RESTScope
	}{
		{fabricv1.GroupVersion.WithKind("ClusterNetwork"), "clusternetworks", meta.RESTScopeRoot},
		{fabricv1.GroupVersion.WithKind("ClusterPeer"), "clusterpeers", meta.RESTScopeRoot},
		{fabricv1.GroupVersion.WithKind("FabricGateway"), "fabricgateways", meta.RESTScopeRoot},
		{corev1.SchemeGroupVersion.WithKind("Node"), "nodes", meta.RESTScopeRoot},
		{coordinationv1.SchemeGroupVersion.WithKind("Lease"), "leases", meta.RESTScopeNamespace},
		{corev1.SchemeGroupVersion.WithKind("Event"), "events", meta.RESTScopeNamespace},
	} {
		gv := k.gvk.GroupVersion()
		m.AddSpecific(k.gvk, gv.WithResource(k.resource), gv.WithResource(strings.ToLower(k.gvk.Kind)), k.scope)
	}
	return m
}

// keptNetwork is the part of a ClusterNetwork kept: what a gateway starts from.
func keptNetwork(cn *fabricv1.ClusterNetwork) fabricv1.ClusterNetwork {
	return fabricv1.ClusterNetwork{ObjectMeta: metav1.ObjectMeta{Name: cn.Name, UID: cn.UID}, Spec: *cn.Spec.DeepCopy()}
}

// peersVersion names a read of the ClusterPeers by their names and resource versions: the
// kept peers are written again only when it changes.
func peersVersion(peers []fabricv1.ClusterPeer) string {
	v := make([]string, 0, len(peers))
	for _, p := range peers {
		v = append(v, p.Name+"@"+p.ResourceVersion)
	}
	sort.Strings(v)
	return strings.Join(v, ",")
}
