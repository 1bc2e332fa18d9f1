package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/doctest"
)

// DocsInput is the input of Docs.
type DocsInput struct {
	Lab *Lab
	// Bin holds weft's binaries: the pages' bin/weftctl.
	Bin string
	// Tag picks the blocks meant for this lab: "demo" (make demo's lab, after the tour) or
	// "routers" (a lab whose clusters have BGP routers).
	Tag string
	// Pages are the docs pages, relative to the repository, in the order a user reads them.
	Pages []string
}

// Docs runs the command blocks of docs pages that are marked for the lab (internal/doctest),
// in order, as a user following the pages would: a page that drifts from the code fails.
// Commands run in a directory where bin/, config/, hack/ and docs/ are the repository's
// (bin/ the test's build), with the lab's KUBECONFIG, WEFT_LAB_STATE and its kubectl and
// weftctl first on PATH: what `eval "$(bin/weftctl lab env)"` gives a shell.
func Docs(t *testing.T, in DocsInput) {
	root := repoRoot(t)
	work := t.TempDir()
	for name, target := range map[string]string{"bin": in.Bin, "config": filepath.Join(root, "config"),
		"hack": filepath.Join(root, "hack"), "docs": filepath.Join(root, "docs")} {
		if err := os.Symlink(target, filepath.Join(work, name)); err != nil {
			t.Fatal(err)
		}
	}
	deps := labDeps(t, root)
	env := append(os.Environ(), "KUBECONFIG="+in.Lab.Kubeconfig, "WEFT_LAB_STATE="+in.Lab.State,
		"PATH="+deps["KUBE_BIN"]+":"+in.Bin+":"+os.Getenv("PATH"))
	ran := 0
	for _, page := range in.Pages {
		blocks, err := doctest.Blocks(filepath.Join(root, page), in.Tag)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range blocks {
			ran++
			name := fmt.Sprintf("%s:%d", page, b.Line)
			deadline := time.Now().Add(b.Retry)
			for {
				err := b.Run(work, env)
				if err == nil {
					break
				}
				if time.Now().Before(deadline) {
					time.Sleep(time.Second)
					continue
				}
				t.Errorf("%s: %v", name, err)
				break
			}
		}
	}
	if ran == 0 {
		t.Errorf("no block of %v is marked for the %s lab", in.Pages, in.Tag)
	}
	t.Logf("ran %d blocks of %d pages", ran, len(in.Pages))
}
