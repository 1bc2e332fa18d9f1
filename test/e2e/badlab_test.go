package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestLabUpRefusesMissingBinaries: bad lab options fail at once with a message naming what is
// wrong, before anything is created.
func TestLabUpRefusesMissingBinaries(t *testing.T) {
	root := repoRoot(t)
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+"/", "./cmd/weftctl")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	state := t.TempDir()
	out, err := exec.Command(filepath.Join(bin, "weftctl"), "lab", "up", "--name", "badbins", "--state", state,
		"--kube-bin", "/nonexistent/k8s", "--cni", "flannel", "--clusters", "0").CombinedOutput()
	if err == nil {
		t.Fatalf("lab up with missing binaries succeeded:\n%s", out)
	}
	for _, want := range []string{
		"missing binary /nonexistent/k8s/kube-apiserver (hack/lab-deps.sh builds it)",
		`--cni "flannel": the lab knows reference`,
		"--clusters 0 --nodes 2: each between 1 and 9",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output does not say %q:\n%s", want, out)
		}
	}
	if entries, _ := os.ReadDir(state); len(entries) != 0 {
		t.Errorf("a refused lab up left files in its state directory: %v", entries)
	}
	if names, _ := filepath.Glob("/run/netns/weftlab-badbins-*"); len(names) != 0 {
		t.Errorf("a refused lab up created namespaces: %v", names)
	}
}
