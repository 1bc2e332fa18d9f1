package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// troubleLine is a line of the demo's output that reports a problem: an error, a warning
// (kubectl's, klog's "E1206"/"W1206" lines) or a failed step.
var troubleLine = regexp.MustCompile(`(?i)\b(errors?|warnings?|demo failed)\b|^[EW]\d{4} `)

// TestDemo runs hack/demo.sh — what `make demo` shows a newcomer — from start to finish
// against a lab of its own, twice: the second run reuses the lab, as a second `make demo`
// does. It fails when a step of the tour fails (the script checks what each step shows and
// exits non-zero) or when the output carries an error or a warning.
func TestDemo(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the demo needs root: its lab creates network namespaces (run `make test` as root, as CI does)")
	}
	if os.Getenv("WEFT_E2E_STATE") != "" {
		t.Skip("WEFT_E2E_STATE names an existing lab to run TestLab's specs against; the demo brings up its own")
	}
	root := repoRoot(t)
	bin := buildWeft(t, root)
	state := filepath.Join(os.TempDir(), "weft-demo-lab")
	down := func() {
		if out, err := exec.Command(filepath.Join(bin, "weftctl"), "lab", "down", "--name", "demo", "--state", state).CombinedOutput(); err != nil {
			t.Errorf("weftctl lab down: %v\n%s", err, out)
		}
	}
	down() // a lab an interrupted run left
	t.Cleanup(down)
	lab := &Lab{Name: "demo", State: state, Kubeconfig: filepath.Join(state, "kubeconfig"), Weftctl: filepath.Join(bin, "weftctl"),
		Kubectl: filepath.Join(labDeps(t, root)["KUBE_BIN"], "kubectl"), Clusters: []string{"weft-1", "weft-2"}}
	for _, run := range []string{"first run (brings the lab up)", "second run (reuses the lab)"} {
		t.Run(run, func(t *testing.T) {
			start := time.Now()
			cmd := exec.Command("bash", filepath.Join(root, "hack", "demo.sh"))
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "WEFT_BIN="+bin, "WEFT_LAB_NAME=demo", "WEFT_LAB_STATE="+state, "WEFT_LAB_API_PORT=36443")
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			t.Logf("hack/demo.sh took %v", time.Since(start).Round(time.Second))
			if err != nil {
				t.Fatalf("hack/demo.sh: %v\n%s", err, out.String())
			}
			var trouble []string
			for _, line := range strings.Split(out.String(), "\n") {
				if troubleLine.MatchString(line) {
					trouble = append(trouble, line)
				}
			}
			if len(trouble) > 0 {
				t.Errorf("the demo's output reports trouble:\n%s\n\nthe whole output:\n%s", strings.Join(trouble, "\n"), out.String())
			}
		})
	}
	t.Run("the docs' walk-throughs work in the demo's lab", func(t *testing.T) {
		Docs(t, DocsInput{Lab: lab, Bin: bin, Tag: "demo", Pages: DemoPages})
	})
	t.Run("a fresh make demo logs no error", func(t *testing.T) {
		NoErrorLogs(t, lab)
	})
}

// DemoPages are the docs pages whose walk-throughs run in make demo's lab, in reading order.
var DemoPages = []string{"docs/lab.md", "docs/getting-started.md", "docs/multicluster-services.md",
	"docs/gateways.md", "docs/policy.md", "docs/datapaths.md", "docs/install.md", "docs/troubleshooting.md"}

// TestDocs runs the docs' walk-throughs against a lab that is up (WEFT_DOCS_STATE=<its
// state dir>, WEFT_DOCS_TAG=demo or routers; bin/ built): to work on a page without a new
// lab. make test runs them in TestDemo and TestLab.
func TestDocs(t *testing.T) {
	state := os.Getenv("WEFT_DOCS_STATE")
	if state == "" {
		t.Skip("WEFT_DOCS_STATE names a running lab to run the docs against (make test runs them in TestDemo and TestLab)")
	}
	tag := os.Getenv("WEFT_DOCS_TAG")
	pages := DemoPages
	if tag == "" {
		tag = "demo"
	} else if tag == "routers" {
		pages = RouterPages
	}
	root := repoRoot(t)
	lab := &Lab{State: state, Kubeconfig: filepath.Join(state, "kubeconfig"), Clusters: []string{"weft-1", "weft-2"},
		Kubectl: filepath.Join(labDeps(t, root)["KUBE_BIN"], "kubectl")}
	if p := os.Getenv("WEFT_DOCS_PAGES"); p != "" {
		pages = strings.Split(p, ",")
	}
	Docs(t, DocsInput{Lab: lab, Bin: filepath.Join(root, "bin"), Tag: tag, Pages: pages})
}

// RouterPages are the docs pages whose walk-throughs need a lab with BGP routers.
var RouterPages = []string{"docs/bgp.md", "docs/egress.md"}
