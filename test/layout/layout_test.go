package layout_test

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/weft-net/weft"

// root is the repository root (this package lives two levels below it).
func root(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// goList runs `go list` in the repository root and returns its output lines.
func goList(t *testing.T, args ...string) []string {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list"}, args...)...)
	cmd.Dir = root(t)
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list %v: %v\n%s", args, err, ee.Stderr)
		}
		t.Fatalf("go list %v: %v", args, err)
	}
	return strings.Fields(string(out))
}

// layoutRows returns the paths in the first column of the README's layout table.
func layoutRows(t *testing.T) map[string]bool {
	t.Helper()
	f, err := os.Open(filepath.Join(root(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	cell := regexp.MustCompile("`([^`]+)`")
	rows := map[string]bool{}
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "## "):
			in = line == "## Layout"
		case in && strings.HasPrefix(line, "| `"):
			first := strings.SplitN(strings.TrimPrefix(line, "|"), "|", 2)[0]
			for _, m := range cell.FindAllStringSubmatch(first, -1) {
				rows[strings.TrimSuffix(m[1], "/")] = true
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(rows) == 0 {
		t.Fatal("README.md has no layout table under \"## Layout\"")
	}
	return rows
}

func TestReadmeListsEveryPackage(t *testing.T) {
	rows := layoutRows(t)
	var missing []string
	pkgs := map[string]bool{}
	for _, p := range goList(t, "./...") {
		rel := strings.TrimPrefix(strings.TrimPrefix(p, module), "/")
		pkgs[rel] = true
		if !rows[rel] {
			missing = append(missing, rel)
		}
	}
	if len(missing) > 0 {
		t.Errorf("README.md's layout table lacks a row for: %s", strings.Join(missing, ", "))
	}
	// A row that names neither a package nor something in the tree is stale.
	var stale []string
	for r := range rows {
		if pkgs[r] {
			continue
		}
		if _, err := os.Stat(filepath.Join(root(t), r)); err != nil {
			stale = append(stale, r)
		}
	}
	sort.Strings(stale)
	if len(stale) > 0 {
		t.Errorf("README.md's layout table names what does not exist: %s", strings.Join(stale, ", "))
	}
}

// TestLayers checks the import rules between layers, over every package's dependencies.
func TestLayers(t *testing.T) {
	rules := []struct{ from, to, why string }{
		{"internal/", "controllers/", "internal/ holds helpers the controllers use, not the other way round (the operator's wiring is cmd/weft-operator/manager)"},
		{"agent", "gateway", "what agent and gateway share lives in a neutral package (internal/health)"},
		{"lab", "controllers/", "the lab installs weft as a user would, through its manifests"},
		{"agent/policy/oracle", "agent/", "the reference evaluator shares no helper with the compiler, so a bug in one cannot hide from the equivalence tests"},
		{"agent/policy/oracle", "internal/", "the reference evaluator shares no helper with the compiler"},
	}
	for _, p := range goList(t, "-f", "{{.ImportPath}}", "./...") {
		rel := strings.TrimPrefix(strings.TrimPrefix(p, module), "/")
		for _, r := range rules {
			if !under(rel, r.from) {
				continue
			}
			for _, d := range goList(t, "-deps", "-f", "{{.ImportPath}}", p) {
				if !strings.HasPrefix(d, module+"/") {
					continue
				}
				if dep := strings.TrimPrefix(d, module+"/"); dep != rel && under(dep, r.to) {
					t.Errorf("%s imports %s: %s", rel, dep, r.why)
				}
			}
		}
	}
}

// under reports whether package path p lies under prefix: "agent" matches agent and agent/...;
// "internal/" matches only what is below internal.
func under(p, prefix string) bool {
	if strings.HasSuffix(prefix, "/") {
		return strings.HasPrefix(p, prefix)
	}
	return p == prefix || strings.HasPrefix(p, prefix+"/")
}

// TestDaemonsOwnTheirFlags: controller-runtime's client/config registers a --kubeconfig flag
// when imported, and the agent and gateway define their own: the binary would panic at
// start ("flag redefined"), as the agent once did through internal/phases.
func TestDaemonsOwnTheirFlags(t *testing.T) {
	const registers = "sigs.k8s.io/controller-runtime/pkg/client/config"
	for _, cmd := range []string{"./cmd/weft-agent", "./cmd/weft-gateway", "./cmd/weft-dns", "./cmd/weft-cni"} {
		for _, d := range goList(t, "-deps", "-f", "{{.ImportPath}}", cmd) {
			if d == registers {
				t.Errorf("%s imports %s, which registers a --kubeconfig flag of its own", cmd, registers)
			}
		}
	}
}
