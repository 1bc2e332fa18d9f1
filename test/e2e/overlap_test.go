package e2e

import (
	"os"
	"path/filepath"
	"testing"
)

// TestOverlapLab runs three clusters, the third with the first one's pod and service
// ranges (lab up --overlap), as clusters made with the same installer defaults: weft-1 on
// the ovs datapath, weft-2 and weft-3 on the ebpf one, each with a gateway and a worker.
func TestOverlapLab(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the lab e2e suite needs root: it creates network namespaces (run `make test` as root, as CI does)")
	}
	lab := upNamedLab(t, "e2eov", 26543, 3, 2, "ovs,ebpf", "none", "--overlap")
	t.Run("nodes are Ready with pod CIDRs", func(t *testing.T) {
		NodesReady(t, NodesInput{Lab: lab, Nodes: 2})
	})
	t.Run("weft installs in the three clusters", func(t *testing.T) {
		InstallWeft(t, InstallInput{Lab: lab, Cluster: "weft-1", PodCIDR: "10.244.0.0/16", ServiceCIDR: "10.96.0.0/16"})
		InstallWeft(t, InstallInput{Lab: lab, Cluster: "weft-2", PodCIDR: "10.245.0.0/16", ServiceCIDR: "10.97.0.0/16"})
		InstallWeft(t, InstallInput{Lab: lab, Cluster: "weft-3", PodCIDR: "10.244.0.0/16", ServiceCIDR: "10.96.0.0/16"})
	})
	t.Run("weftctl clusterset join peers the three, the overlapping ones too", func(t *testing.T) {
		ClustersetJoin(t, ClustersetInput{Lab: lab, Clusters: []string{"weft-1", "weft-2", "weft-3"}})
	})
	if t.Failed() {
		t.FailNow()
	}
	Overlap(t, OverlapInput{Lab: lab, A: "weft-1", B: "weft-2", C: "weft-3", PodCIDR: "10.244.0.0/16", ServiceCIDR: "10.96.0.0/16",
		Namespace: "e2e-overlap", BeforeFailover: func(t *testing.T) {
			t.Run("the overlap page's walk-through works", func(t *testing.T) {
				Docs(t, DocsInput{Lab: lab, Bin: filepath.Dir(lab.Weftctl), Tag: "overlap", Pages: []string{"docs/overlap.md"}})
			})
		}})
	t.Run("weftctl diagnose passes, and names a stopped gateway and a missing DNS block", func(t *testing.T) {
		Diagnose(t, DiagnoseInput{Lab: lab, Cluster: "weft-2"})
	})
}
