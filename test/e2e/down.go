package e2e

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// DownLeavesNothing takes the lab down and checks that no namespace, link, mount, process or
// listening port of it is left.
func DownLeavesNothing(t *testing.T, l *Lab) {
	if out, err := exec.Command(l.Weftctl, "lab", "down", "--name", l.Name, "--state", l.State).CombinedOutput(); err != nil {
		t.Fatalf("weftctl lab down: %v\n%s", err, out)
	}
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "weftlab-"+l.Name+"-") {
			t.Errorf("network namespace left: %s", e.Name())
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mounts), "\n") {
		if strings.Contains(line, l.State) || strings.Contains(line, "weftlab-"+l.Name+"-") {
			t.Errorf("mount left: %s", line)
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		data, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(data), l.State) {
			t.Errorf("process left: %s: %s", p, strings.ReplaceAll(string(data), "\x00", " "))
		}
	}
	if after := hostLinks(t); after != l.linksBefore {
		t.Errorf("host links changed:\nbefore %s\nafter  %s", l.linksBefore, after)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:26443")
	if err != nil {
		t.Errorf("the API forward port is still taken: %v", err)
	} else {
		ln.Close()
	}
}

func hostLinks(t testing.TB) string {
	out, err := exec.Command("ip", "-o", "link", "show").Output()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			names = append(names, f[1])
		}
	}
	return strings.Join(names, " ")
}
