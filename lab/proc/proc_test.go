package proc_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/lab/proc"
)

// A process started with a niceness runs with it, and keeps its own name (the niceness is
// set by exec, not by a parent that stays).
func TestNice(t *testing.T) {
	const sleep = "/bin/sleep"
	if _, err := os.Stat(sleep); err != nil {
		t.Skip("no /bin/sleep")
	}
	s := proc.New()
	t.Cleanup(func() { s.StopAll(time.Second) })
	if err := s.Start(proc.Spec{Name: "sleeper", Path: sleep, Args: []string{"30"}, Nice: 5, LogPath: filepath.Join(t.TempDir(), "log")}); err != nil {
		t.Fatal(err)
	}
	var pid int
	for _, st := range s.Status() {
		if st.Name == "sleeper" {
			pid = st.PID
		}
	}
	if pid == 0 {
		t.Fatal("the process is not running")
	}
	// /proc/<pid>/stat: "pid (comm) state ..." — niceness is the 19th field, counting from 1.
	var fields []string
	for start := time.Now(); time.Since(start) < 5*time.Second; time.Sleep(20 * time.Millisecond) {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "(sleep)") { // nice has exec'd it
			fields = strings.Fields(string(b))
			break
		}
	}
	if fields == nil {
		t.Fatal("the process did not become sleep")
	}
	if fields[18] != "5" {
		t.Errorf("niceness %s, want 5", fields[18])
	}
}
