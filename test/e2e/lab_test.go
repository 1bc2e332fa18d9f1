package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// upLab builds weftctl and the weft binaries, brings a lab named "e2e" up with BIRD and FRR
// routers, and takes it down when the test ends.
func upLab(t testing.TB, clusters, nodes int, datapaths string) *Lab {
	return upLabWith(t, clusters, nodes, datapaths, "bird,frr")
}

// upLabWith is upLab with the routers by cluster ("none" for none).
func upLabWith(t testing.TB, clusters, nodes int, datapaths, routers string) *Lab {
	return upNamedLab(t, "e2e", 26443, clusters, nodes, datapaths, routers)
}

// upNamedLab is upLabWith for a lab of another name (its state in weft-<name>-lab, its API
// servers from apiPort), with more flags for weftctl lab up.
func upNamedLab(t testing.TB, name string, apiPort, clusters, nodes int, datapaths, routers string, flags ...string) *Lab {
	t.Helper()
	root := repoRoot(t)
	deps := labDeps(t, root)
	bin := buildWeft(t, root)
	state := filepath.Join(os.TempDir(), "weft-"+name+"-lab")
	l := &Lab{Name: name, State: state, Kubeconfig: filepath.Join(state, "kubeconfig"),
		Kubectl: filepath.Join(deps["KUBE_BIN"], "kubectl"), Weftctl: filepath.Join(bin, "weftctl")}
	for i := 1; i <= clusters; i++ {
		l.Clusters = append(l.Clusters, "weft-"+strconv.Itoa(i))
	}
	l.upArgs = []string{"lab", "up", "--name", l.Name, "--state", state, "--api-port", strconv.Itoa(apiPort),
		"--clusters", strconv.Itoa(clusters), "--nodes", strconv.Itoa(nodes),
		"--kube-bin", deps["KUBE_BIN"], "--coredns", filepath.Join(deps["COREDNS_BIN"], "coredns"),
		"--cni-bin", deps["CNI_BIN"], "--weft-bin", bin, "--labtool", filepath.Join(bin, "labtool"),
		"--cni", "weft", "--weft-manifests", filepath.Join(root, "config", "default"),
		// By cluster: TestLab's weft-1 runs the ovs datapath, weft-2 the ebpf one, so every
		// cross-cluster spec runs between the two.
		"--datapath", datapaths,
		// Each cluster's nodes speak BGP with a router of its own: BIRD for weft-1, FRR for
		// weft-2 (an ebpf cluster then runs without encapsulation).
		"--router", routers}
	l.upArgs = append(l.upArgs, flags...)
	// A lab of this name left by an earlier, interrupted run is taken down first.
	_ = exec.Command(l.Weftctl, "lab", "down", "--name", l.Name, "--state", state).Run()
	l.linksBefore = hostLinks(t)
	l.up(t)
	t.Cleanup(func() {
		if out, err := exec.Command(l.Weftctl, "lab", "down", "--name", l.Name, "--state", state).CombinedOutput(); err != nil {
			t.Errorf("weftctl lab down: %v\n%s", err, out)
		}
	})
	return l
}

// buildWeft builds weftctl, labtool and weft's binaries into a directory of the test's, as
// `make build` does into bin/.
func buildWeft(t testing.TB, root string) string {
	t.Helper()
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+"/", "./cmd/weftctl", "./cmd/weft-operator", "./cmd/labtool",
		"./cmd/weft-agent", "./cmd/weft-cni", "./cmd/weft-ovs", "./cmd/weft-gateway", "./cmd/weft-dns")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func (l *Lab) up(t testing.TB) {
	t.Helper()
	start := time.Now()
	out, err := exec.Command(l.Weftctl, l.upArgs...).CombinedOutput()
	if err != nil {
		t.Fatalf("weftctl lab up: %v\n%s", err, out)
	}
	t.Logf("lab up took %v", time.Since(start).Round(100*time.Millisecond))
}

// existingLab uses a lab that is already up (WEFT_E2E_STATE=<state dir>, WEFT_E2E_NAME=<name>)
// to iterate on specs quickly; the suite then neither brings it up nor down. Specs that need
// the clusters peered by the suite run when WEFT_E2E_WEFTCTL names a weftctl.
func existingLab(t *testing.T) *Lab {
	state := os.Getenv("WEFT_E2E_STATE")
	if state == "" {
		return nil
	}
	deps := labDeps(t, repoRoot(t))
	return &Lab{Name: os.Getenv("WEFT_E2E_NAME"), State: state, Kubeconfig: filepath.Join(state, "kubeconfig"),
		Kubectl: filepath.Join(deps["KUBE_BIN"], "kubectl"), Clusters: []string{"weft-1", "weft-2"},
		Weftctl: os.Getenv("WEFT_E2E_WEFTCTL")}
}

func TestLab(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the lab e2e suite needs root: it creates network namespaces (run `make test` as root, as CI does)")
	}
	lab := existingLab(t)
	if lab == nil {
		lab = upLab(t, 2, 3, "ovs,ebpf")
	}

	t.Run("nodes are Ready with pod CIDRs", func(t *testing.T) {
		NodesReady(t, NodesInput{Lab: lab, Nodes: 3})
	})
	t.Run("pods talk pod to pod across nodes and to a Service by DNS name", func(t *testing.T) {
		Connectivity(t, ConnectivityInput{Lab: lab, Cluster: "weft-1", Namespace: "e2e-net"})
	})
	t.Run("pods talk on the ebpf datapath as well", func(t *testing.T) {
		Connectivity(t, ConnectivityInput{Lab: lab, Cluster: "weft-2", Namespace: "e2e-net"})
	})
	t.Run("kubectl exec and logs", func(t *testing.T) {
		ExecAndLogs(t, ExecInput{Lab: lab, Cluster: "weft-2", Namespace: "e2e-exec"})
	})
	t.Run("bad input gets a clear status", func(t *testing.T) {
		BadInput(t, BadInputInput{Lab: lab, Cluster: "weft-1", Namespace: "e2e-bad"})
	})
	t.Run("the weft operator installs from config/default", func(t *testing.T) {
		InstallWeft(t, InstallInput{Lab: lab, Cluster: "weft-1", PodCIDR: "10.244.0.0/16", ServiceCIDR: "10.96.0.0/16"})
		InstallWeft(t, InstallInput{Lab: lab, Cluster: "weft-2", PodCIDR: "10.245.0.0/16", ServiceCIDR: "10.97.0.0/16"})
	})
	t.Run("a node's unauthenticated listeners answer only on its loopback, its metrics only to readers", func(t *testing.T) {
		NodeListeners(t, InstallInput{Lab: lab, Cluster: "weft-1"})
	})
	for _, c := range []string{"weft-1", "weft-2"} {
		t.Run("a node's identity changes only its own node's objects, and bad blocks route nowhere on "+c, func(t *testing.T) {
			NodeIdentity(t, NodeIdentityInput{Lab: lab, Cluster: c})
		})
	}
	t.Run("FabricPolicy and NetworkPolicy are enforced as the reference evaluator decides", func(t *testing.T) {
		Policy(t, PolicyInput{Lab: lab, Cluster: "weft-1"})
	})
	t.Run("policy is enforced on the ebpf datapath as well", func(t *testing.T) {
		Policy(t, PolicyInput{Lab: lab, Cluster: "weft-2"})
	})
	t.Run("weftctl peer join connects the clusters", func(t *testing.T) {
		if lab.Weftctl == "" {
			t.Skip("needs the suite's own weftctl build")
		}
		PeerJoin(t, PeerInput{Lab: lab, From: "weft-1", To: "weft-2", ToPodCIDR: "10.245.0.0/16", Namespace: "e2e-join"})
	})
	t.Run("pods reach pods in the peer cluster through the gateways", func(t *testing.T) {
		if lab.Weftctl == "" {
			t.Skip("needs the peered clusters of the suite's own lab")
		}
		CrossCluster(t, CrossClusterInput{Lab: lab, From: "weft-1", To: "weft-2", Namespace: "e2e-xc", Tunnels: []string{"geneve", "vxlan"}})
	})
	t.Run("a Service exported in one cluster is imported and reachable in the other", func(t *testing.T) {
		if lab.Weftctl == "" {
			t.Skip("needs the peered clusters of the suite's own lab")
		}
		MultiClusterServices(t, MCSInput{Lab: lab, From: "weft-1", To: "weft-2", Namespace: "e2e-mcs"})
	})
	for _, c := range []struct{ cluster, peer string }{{"weft-1", "weft-2"}, {"weft-2", "weft-1"}} {
		t.Run("BGP announces "+c.cluster+"'s pod blocks to its router", func(t *testing.T) {
			in := BGPInput{Lab: lab, Cluster: c.cluster, Namespace: "e2e-bgp-" + c.cluster[len(c.cluster)-1:], Nodes: 3}
			if lab.Weftctl != "" {
				in.ExportFrom = c.peer
			}
			BGP(t, in)
		})
	}
	t.Run("the BGP page's walk-through works in a lab with routers", func(t *testing.T) {
		if lab.Weftctl == "" {
			t.Skip("needs the suite's own weftctl build")
		}
		Docs(t, DocsInput{Lab: lab, Bin: filepath.Dir(lab.Weftctl), Tag: "routers", Pages: RouterPages})
	})
	t.Run("gateways are active-active and fail over in under a second", func(t *testing.T) {
		if lab.Weftctl == "" {
			t.Skip("needs the peered clusters of the suite's own lab")
		}
		Failover(t, FailoverInput{Lab: lab, From: "weft-1", To: "weft-2", Namespace: "e2e-failover",
			FromPodCIDR: "10.244.0.0/16", ToPodCIDR: "10.245.0.0/16"})
	})
	if lab.Weftctl == "" || os.Getenv("WEFT_E2E_STATE") != "" {
		return // an existing lab: leave it as it is
	}
	t.Run("uninstalling weft leaves the cluster clean and its nodes on the network", func(t *testing.T) {
		Uninstall(t, UninstallInput{Lab: lab, Cluster: "weft-2", Peer: "weft-1"})
	})
	t.Run("a killed lab is cleaned up by the next lab up", func(t *testing.T) {
		CrashRecovery(t, lab)
	})
	t.Run("lab down leaves no namespace, link, mount or process", func(t *testing.T) {
		DownLeavesNothing(t, lab)
	})
}

// daemonPID reads the lab daemon's PID.
func (l *Lab) daemonPID(t testing.TB) int {
	data, err := os.ReadFile(filepath.Join(l.State, "daemon.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// CrashRecovery kills the lab daemon with SIGKILL and brings the lab up again: the new lab
// must clean up what the old one left and come up healthy.
func CrashRecovery(t *testing.T, l *Lab) {
	pid := l.daemonPID(t)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	Eventually(t, 10*time.Second, func() error {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			return fmt.Errorf("daemon %d still alive", pid)
		}
		return nil
	})
	left, _ := os.ReadDir("/run/netns")
	stale := 0
	for _, e := range left {
		if strings.HasPrefix(e.Name(), "weftlab-"+l.Name+"-") {
			stale++
		}
	}
	t.Logf("the killed lab left %d network namespaces", stale)
	l.up(t)
	NodesReady(t, NodesInput{Lab: l, Nodes: 3})
	cs := l.Client(t, l.Clusters[0])
	Eventually(t, 2*time.Minute, func() error {
		dep, err := cs.AppsV1().Deployments("kube-system").Get(context.Background(), "coredns", metav1GetOptions)
		if err != nil {
			return err
		}
		if dep.Status.AvailableReplicas < 1 {
			return fmt.Errorf("coredns not available after recovery")
		}
		return nil
	})
}
