package statefile_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weft-net/weft/internal/statefile"
)

// A file is replaced whole, with the mode asked for, its directory made, and no temporary
// file left beside it.
func TestWriteReplacesTheFileWhole(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "deeper")
	path := filepath.Join(dir, "kept.json")
	if err := statefile.PrivateJSON(path, map[string]int{"a": 1}); err != nil {
		t.Fatal(err)
	}
	if err := statefile.Write(path, []byte("second\n"), 0o644, 0o755); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil || string(got) != "second\n" {
		t.Fatalf("read %q, %v; want the second content", got, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, %v; want 0644", fi.Mode().Perm(), err)
	}
	if di, err := os.Stat(dir); err != nil || di.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %v, %v; want 0700 (made by the first, private write)", di.Mode().Perm(), err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("the directory holds %d entries; want the file alone (no temporary left)", len(entries))
	}
}

// ReadJSON: no file is nothing found and no error; a file reads back what PrivateJSON wrote;
// a damaged one is an error that names it.
func TestReadJSON(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	var v map[string]int
	if found, err := statefile.ReadJSON(path, &v); found || err != nil {
		t.Fatalf("no file: found %v, %v", found, err)
	}
	if err := statefile.PrivateJSON(path, map[string]int{"a": 1}); err != nil {
		t.Fatal(err)
	}
	if found, err := statefile.ReadJSON(path, &v); !found || err != nil || v["a"] != 1 {
		t.Fatalf("read back %v (found %v, %v)", v, found, err)
	}
	if err := os.WriteFile(path, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := statefile.ReadJSON(path, &v); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("a damaged file: %v, want an error naming it", err)
	}
}
