package render

import (
	"strings"
	"testing"
)

func TestWithClusterSetZone(t *testing.T) {
	base := ".:53 {\n    kubernetes cluster.local\n    reload 5s\n}\n"
	one := WithClusterSetZone(base, "clusterset.local", "10.96.0.53")
	if !strings.HasPrefix(one, base) || strings.Count(one, "clusterset.local:53 {") != 1 || !strings.Contains(one, "forward . 10.96.0.53") {
		t.Fatalf("added block:\n%s", one)
	}
	if again := WithClusterSetZone(one, "clusterset.local", "10.96.0.53"); again != one {
		t.Errorf("applying twice changed the Corefile:\n%s", again)
	}
	moved := WithClusterSetZone(one, "mesh.example", "10.96.0.54")
	if strings.Contains(moved, "10.96.0.53") || strings.Count(moved, ":53 {") != 2 || !strings.Contains(moved, "mesh.example:53 {\n    errors\n    forward . 10.96.0.54\n}") {
		t.Errorf("a new domain and address replace the block:\n%s", moved)
	}
	if removed := WithClusterSetZone(moved, "mesh.example", ""); removed != base {
		t.Errorf("removing the block left:\n%q\nwant\n%q", removed, base)
	}
}
