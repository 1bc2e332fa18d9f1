package doctest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLineMatches(t *testing.T) {
	for _, c := range []struct {
		want, got string
		ok        bool
	}{
		{"NAME      CLUSTER ID   BACKEND", "NAME  CLUSTER ID  BACKEND", true},
		{"NAME      CLUSTER ID   BACKEND", "NAME  CLUSTERID  BACKEND", false}, // a renamed column
		{"default   weft-1   ovs   True   Reconciled   17s", "default weft-1 ovs True Reconciled 3m10s", true},
		{"hello   ClusterSetIP   [\"10.96.6.185\"]   0s", `hello ClusterSetIP ["10.96.93.187"] 12s`, true},
		{"hello-594998f5d9-bt4mc   1/1   Running", "hello-7c5d8b9f4-x2k9p 1/1 Running", true},
		{"hello-594998f5d9-bt4mc   1/1   Running", "client 1/1 Running", false},
		{"weft-1-node-1  weft-2/weft-2-node-1  Active  yes  18s ago  weft-wg30117f54  172.30.2.11:51820",
			"weft-1-node-1 weft-2/weft-2-node-1 Active yes 2m ago weft-wg2539ac04 172.30.2.12:51821", true},
		{"weft-1-node-1  weft-2/weft-2-node-1  Active  yes ...", "weft-1-node-1 weft-2/weft-2-node-1 Active yes 2m ago x y", true},
		{"weft-1-node-1  weft-2/weft-2-node-1  Standby", "weft-1-node-1 weft-2/weft-2-node-1 Active", false},
		{"a <VIP> c", "a 10.96.1.1 c", true},
		{"weft-1   https://127.0.0.1:16443  2/2", "weft-1 https://127.0.0.1:36443 2/2", true},
		{"a b", "a b c", false},
	} {
		if got := LineMatches(c.want, c.got); got != c.ok {
			t.Errorf("LineMatches(%q, %q) = %v, want %v", c.want, c.got, got, c.ok)
		}
	}
}

func TestBlocksAndRun(t *testing.T) {
	page := filepath.Join(t.TempDir(), "page.md")
	text := "Intro\n\n```sh\nnot run\n```\n\n<!-- docs-test: demo -->\n```sh\necho hi\n```\n\n" +
		"<!-- docs-test: routers -->\n```sh\nexit 1\n```\n\n" +
		"<!-- docs-test: demo retry=2s -->\n```console\n$ printf 'NAME  AGE\\nx  5s\\n'\nNAME  AGE\nx  3m\n$ echo one \\\n  two\none two\n```\n\n" +
		"<!-- docs-test: demo fails -->\n```console\n$ echo refused; false\nrefused\n```\n"
	if err := os.WriteFile(page, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	blocks, err := Blocks(page, "demo")
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) != 3 || blocks[1].Retry.Seconds() != 2 || !blocks[2].Fails {
		t.Fatalf("blocks %+v", blocks)
	}
	for _, b := range blocks {
		if err := b.Run(t.TempDir(), os.Environ()); err != nil {
			t.Errorf("block at line %d: %v", b.Line, err)
		}
	}
	// A shown output that differs fails, saying what.
	bad := Block{Lang: "console", Body: []string{"$ echo NAME AGE", "NAME  SINCE"}}
	if err := bad.Run(t.TempDir(), os.Environ()); err == nil || !strings.Contains(err.Error(), "NAME  SINCE") {
		t.Errorf("a renamed column: %v", err)
	}
	// Lines may come in another order, but each shown line needs a line of its own.
	shuffled := Block{Lang: "console", Body: []string{"$ printf 'b\\na\\n'", "a", "b"}}
	if err := shuffled.Run(t.TempDir(), os.Environ()); err != nil {
		t.Errorf("lines in another order: %v", err)
	}
	twice := Block{Lang: "console", Body: []string{"$ echo a", "a", "a"}}
	if err := twice.Run(t.TempDir(), os.Environ()); err == nil {
		t.Error("one output line matched two shown lines")
	}
	if err := os.WriteFile(page, []byte("<!-- docs-test: demo -->\n```yaml\na: b\n```\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Blocks(page, "demo"); err == nil {
		t.Error("a marked yaml block: no error")
	}
}
