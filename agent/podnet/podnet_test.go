package podnet_test

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/weft-net/weft/agent/cniserver"
	"github.com/weft-net/weft/agent/datapath/fake"
	"github.com/weft-net/weft/agent/ipam"
	"github.com/weft-net/weft/agent/podnet"
)

func newHandler(t *testing.T) (*podnet.Handler, *fake.Datapath, *ipam.Allocator) {
	t.Helper()
	a, err := ipam.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	a.SetBlocks([]netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")})
	dp := fake.New()
	return &podnet.Handler{IPAM: a, Datapath: dp}, dp, a
}

// sandbox makes a file standing for a sandbox's network namespace.
func sandbox(t *testing.T, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func add(t *testing.T, h *podnet.Handler, cid, netns, uid string) netip.Addr {
	t.Helper()
	res, err := h.Add(context.Background(), cniserver.Call{Command: "ADD", ContainerID: cid, IfName: "eth0", Netns: netns,
		PodNamespace: "default", PodName: "web", PodUID: uid})
	if err != nil {
		t.Fatal(err)
	}
	ip, _ := netip.AddrFromSlice(res.IPs[0].Address.IP.To4())
	return ip
}

// A node restart: the pod (same UID) lives on in a new sandbox and the old sandbox's
// namespace is gone. Reconcile releases the old wiring and its address, keeps the new one.
func TestReconcileReleasesSandboxesWhoseNamespaceIsGone(t *testing.T) {
	ctx := context.Background()
	h, dp, a := newHandler(t)
	dir := t.TempDir()
	oldNS := sandbox(t, dir, "old")
	oldIP := add(t, h, "old-sandbox", oldNS, "uid-web")
	if err := os.Remove(oldNS); err != nil {
		t.Fatal(err)
	}
	newIP := add(t, h, "new-sandbox", sandbox(t, dir, "new"), "uid-web")
	unseen := add(t, h, "unseen", "/proc/999999999/ns/net", "uid-web") // a path the agent cannot judge

	live := []corev1.Pod{{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web", UID: types.UID("uid-web")}}}
	if err := h.Reconcile(ctx, live); err != nil {
		t.Fatal(err)
	}
	pods, _ := dp.Pods(ctx)
	wired := map[string]bool{}
	for _, p := range pods {
		wired[p.Key.ContainerID] = true
	}
	if wired["old-sandbox"] || !wired["new-sandbox"] || !wired["unseen"] {
		t.Errorf("wired after Reconcile: %v, want new-sandbox and unseen only", wired)
	}
	allocs, err := a.Allocations()
	if err != nil {
		t.Fatal(err)
	}
	held := map[netip.Addr]string{}
	for _, al := range allocs {
		held[al.IP] = al.Owner.ContainerID
	}
	if _, ok := held[oldIP]; ok || held[newIP] != "new-sandbox" || held[unseen] != "unseen" || len(held) != 2 {
		t.Errorf("addresses held after Reconcile: %v, want %s (new-sandbox) and %s (unseen) only", held, newIP, unseen)
	}

	t.Log("the pod is deleted: everything is released")
	if err := h.Reconcile(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if pods, _ := dp.Pods(ctx); len(pods) != 0 {
		t.Errorf("still wired: %+v", pods)
	}
	if allocs, _ := a.Allocations(); len(allocs) != 0 {
		t.Errorf("still held: %+v", allocs)
	}
}

func TestSandboxGone(t *testing.T) {
	dir := t.TempDir()
	for path, want := range map[string]bool{
		"":                            false,
		sandbox(t, dir, "here"):       false,
		filepath.Join(dir, "missing"): true,
		"/proc/999999999/ns/net":      false,
	} {
		if got := podnet.SandboxGone(path); got != want {
			t.Errorf("SandboxGone(%q) = %v, want %v", path, got, want)
		}
	}
}
