package ovsrun_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/weft-net/weft/internal/netnstest"
	"github.com/weft-net/weft/internal/ovsrun"
)

// An instance owns the node's database until another instance's ovsdb-server takes it over
// (its pid file names that server); weft-ovs leaves the uplink alone then.
func TestOwnsDatabaseUntilAnotherInstanceTakesOver(t *testing.T) {
	netnstest.RequireRoot(t)
	ns := netnstest.New(t, "owns")
	dir := t.TempDir()
	o := ovsrun.Options{RunDir: filepath.Join(dir, "run"), DBDir: filepath.Join(dir, "db"), LogDir: filepath.Join(dir, "log"), Netns: ns.Path()}
	in, err := ovsrun.Start(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(in.Stop)
	if !in.OwnsDatabase() {
		t.Fatal("a running instance does not own its database")
	}
	if err := os.WriteFile(filepath.Join(o.RunDir, "ovsdb-server.pid"), []byte("999999\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if in.OwnsDatabase() {
		t.Error("an instance whose pid file names another ovsdb-server still owns the database")
	}
}
