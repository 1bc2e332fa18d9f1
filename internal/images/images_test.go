package images

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestDockerfileIsGeneratedFromTheTable(t *testing.T) {
	got, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, Dockerfile()) {
		t.Fatal("Dockerfile differs from what internal/images renders: run `make generate-images` and commit it")
	}
}

func TestEveryCommandHasASourceAndOneImage(t *testing.T) {
	seen := map[string]string{}
	for _, im := range All {
		if len(im.Commands) == 0 {
			t.Errorf("image %s carries no command", im.Name)
		}
		for _, c := range im.Commands {
			if other, dup := seen[c]; dup {
				t.Errorf("%s is in both %s and %s", c, other, im.Name)
			}
			seen[c] = im.Name
			if _, err := os.Stat(filepath.Join("../..", Source(c), "main.go")); err != nil {
				t.Errorf("image %s: command %s: %v", im.Name, c, err)
			}
		}
		for _, p := range im.Packages {
			if p.Version == "" || len(p.Programs) == 0 {
				t.Errorf("image %s: package %s needs a pinned version and the programs used from it", im.Name, p.Name)
			}
		}
	}
}

func TestRef(t *testing.T) {
	for _, v := range []string{"0.1.0", "v0.1.0"} {
		if got, want := Ref("weft-dns", v), "ghcr.io/weft-net/weft-dns:v0.1.0"; got != want {
			t.Errorf("Ref(weft-dns, %s) = %s, want %s", v, got, want)
		}
	}
}
