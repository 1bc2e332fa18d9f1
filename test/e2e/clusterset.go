package e2e

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// ClustersetInput is the input of ClustersetJoin.
type ClustersetInput struct {
	Lab      *Lab
	Clusters []string
}

// ClustersetJoin peers every pair of the clusters with `weftctl clusterset join`, runs it
// again (idempotent: it renews the tokens, changes nothing else), waits until every
// ClusterPeer is Ready, and checks `weftctl clusterset status` shows the whole mesh Ready.
func ClustersetJoin(t *testing.T, in ClustersetInput) {
	l := in.Lab
	weftctl := func(args ...string) (string, error) {
		out, err := exec.Command(l.Weftctl, append(append([]string{"clusterset"}, args...), "--kubeconfig", l.Kubeconfig)...).CombinedOutput()
		return string(out), err
	}
	for range 2 {
		if out, err := weftctl(append([]string{"join"}, in.Clusters...)...); err != nil {
			t.Fatalf("weftctl clusterset join: %v\n%s", err, out)
		}
	}
	start := time.Now()
	for _, c := range in.Clusters {
		for _, p := range in.Clusters {
			if c != p {
				l.MustKubectl(t, c, "", "wait", "--for=condition=Ready", "--timeout=180s", "clusterpeer/"+p)
			}
		}
	}
	t.Logf("every ClusterPeer of the %d clusters Ready %s after the join", len(in.Clusters), time.Since(start).Round(100*time.Millisecond))
	var out string
	Eventually(t, 30*time.Second, func() error {
		var err error
		out, err = weftctl(append([]string{"status"}, in.Clusters...)...)
		if err != nil {
			return err
		}
		if n := strings.Count(out, " Ready "); n != len(in.Clusters)*(len(in.Clusters)-1) {
			return fmt.Errorf("weftctl clusterset status shows %d Ready pairs, want %d:\n%s", n, len(in.Clusters)*(len(in.Clusters)-1), out)
		}
		return nil
	})
	t.Logf("weftctl clusterset status:\n%s", out)
}
