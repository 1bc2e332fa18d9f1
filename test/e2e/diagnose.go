package e2e

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// DiagnoseInput is the input of Diagnose.
type DiagnoseInput struct {
	Lab *Lab
	// Cluster is checked; its first node is its only gateway.
	Cluster string
}

// Diagnose runs weftctl diagnose on a healthy cluster (it passes), then stops the cluster's
// gateway (SIGSTOP) and takes weft's block out of the cluster DNS's Corefile: it fails, and
// names both, each with a fix. Both are put back.
func Diagnose(t *testing.T, in DiagnoseInput) {
	l := in.Lab
	run := func(args ...string) (string, error) {
		out, err := exec.Command(l.Weftctl, append([]string{"diagnose", "--kubeconfig", l.Kubeconfig, "--context", in.Cluster}, args...)...).CombinedOutput()
		return string(out), err
	}
	Eventually(t, time.Minute, func() error {
		if out, err := run(); err != nil {
			return fmt.Errorf("weftctl diagnose on a healthy %s: %w\n%s", in.Cluster, err, out)
		}
		return nil
	})

	gw := in.Cluster + "-node-1"
	pid := l.gatewayPID(t, gw)
	if pid == 0 {
		t.Fatalf("no weft-gateway on %s", gw)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = syscall.Kill(pid, syscall.SIGCONT) }()
	corefile := l.MustKubectl(t, in.Cluster, "", "-n", "kube-system", "get", "configmap", "coredns", "-o", "jsonpath={.data.Corefile}")
	begin := strings.Index(corefile, "# weft: begin")
	if begin < 0 {
		t.Fatalf("the Corefile of %s has no weft block:\n%s", in.Cluster, corefile)
	}
	setCorefile := func(s string) {
		t.Helper()
		patch, _ := json.Marshal(map[string]any{"data": map[string]string{"Corefile": s}})
		l.MustKubectl(t, in.Cluster, "", "-n", "kube-system", "patch", "configmap", "coredns", "--type", "merge", "-p", string(patch))
	}
	setCorefile(corefile[:begin])
	defer setCorefile(corefile)

	var checks []struct {
		Check, Detail, Fix string
		OK                 bool
	}
	Eventually(t, time.Minute, func() error {
		out, err := run("-o", "json")
		if err == nil {
			return fmt.Errorf("weftctl diagnose passed with the gateway stopped and the DNS block gone:\n%s", out)
		}
		// The JSON, then the error line.
		if err := json.Unmarshal([]byte(out[:strings.LastIndex(out, "]")+1]), &checks); err != nil {
			return fmt.Errorf("weftctl diagnose -o json: %w\n%s", err, out)
		}
		failed := map[string]string{}
		for _, c := range checks {
			if !c.OK {
				failed[c.Check] = c.Detail + " | fix: " + c.Fix
			}
		}
		dns, gws := failed["the cluster DNS forwards clusterset.local to weft-dns"], failed["gateways renew their Leases"]
		if !strings.Contains(dns, "lacks weft's server block") || !strings.Contains(gws, "stopped: "+gw) {
			return fmt.Errorf("failed checks %v: want the DNS block and the gateway %s named", failed, gw)
		}
		return nil
	})
	out, _ := run()
	t.Logf("weftctl diagnose --context %s with its gateway stopped and the DNS block gone:\n%s", in.Cluster, out)
}
