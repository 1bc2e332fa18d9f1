package manager_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/testenv"
	"github.com/weft-net/weft/lab/forward"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &env) }

type replica struct {
	probe, metrics string
	cmd            *exec.Cmd
	stop           func()
}

// buildOperator builds cmd/weft-operator once and writes an admin kubeconfig for the API server.
func buildOperator(t *testing.T) (bin, kubeconfig string) {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin = filepath.Join(dir, "weft-operator")
	build := exec.Command("go", "build", "-o", bin, "./cmd/weft-operator")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	kc, _, err := env.User("operator", "system:masters")
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	return bin, kubeconfig
}

// startReplica runs one weft-operator process with leader election, as the Deployment does.
func startReplica(t *testing.T, bin, kubeconfig string) *replica {
	t.Helper()
	r := &replica{probe: "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t)), metrics: "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))}
	r.cmd = exec.Command(bin, "--kubeconfig", kubeconfig, "--leader-elect",
		"--health-probe-bind-address", r.probe, "--metrics-bind-address", r.metrics,
		"--webhook-port", strconv.Itoa(testenv.FreePort(t)), "--webhook-cert-dir", t.TempDir(), "--webhook-host=127.0.0.1")
	var logs strings.Builder
	r.cmd.Stdout, r.cmd.Stderr = &logs, &logs
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.cmd.Wait() }()
	stopped := false
	r.stop = func() {
		if stopped {
			return
		}
		stopped = true
		_ = r.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("replica exited with %v; log:\n%s", err, logs.String())
			}
		case <-time.After(20 * time.Second):
			_ = r.cmd.Process.Kill()
			_ = <-done
			t.Errorf("replica did not stop within 20s of SIGTERM; log:\n%s", logs.String())
		}
	}
	t.Cleanup(r.stop)
	return r
}

func get(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

func leaseHolder() (string, error) {
	lease := &coordinationv1.Lease{}
	err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: "weft-system", Name: "weft-operator.fabric.weft.dev"}, lease)
	if err != nil {
		return "", err
	}
	if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
		return "", errors.New("lease has no holder")
	}
	return *lease.Spec.HolderIdentity, nil
}

func TestReplicasElectOneLeaderAndServeProbesAndMetrics(t *testing.T) {
	bin, kubeconfig := buildOperator(t)
	first := startReplica(t, bin, kubeconfig)

	var leader string
	testenv.Eventually(t, 30*time.Second, func() (err error) {
		leader, err = leaseHolder()
		return err
	})
	// The leader's controllers run: the built-in tiers appear.
	testenv.Eventually(t, 30*time.Second, func() error {
		return env.Client.Get(context.Background(), client.ObjectKey{Name: "application"}, &fabricv1.Tier{})
	})

	for _, path := range []string{"/healthz", "/readyz"} {
		testenv.Eventually(t, 10*time.Second, func() error {
			code, body, err := get("http://" + first.probe + path)
			if err != nil || code != http.StatusOK {
				return fmt.Errorf("GET %s: %d %q %w", path, code, body, err)
			}
			return nil
		})
	}
	testenv.MetricsServedOnlyToReaders(t, env.Config, "https://"+first.metrics+"/metrics", `controller_runtime_reconcile_total{controller="tier"`)

	second := startReplica(t, bin, kubeconfig)
	testenv.Eventually(t, 10*time.Second, func() error {
		code, _, err := get("http://" + second.probe + "/readyz")
		if err != nil || code != http.StatusOK {
			return fmt.Errorf("standby replica not ready: %d %w", code, err)
		}
		return nil
	})
	if h, _ := leaseHolder(); h != leader {
		t.Fatalf("the standby took the lease from a live leader: %s -> %s", leader, h)
	}

	// Stopping the leader releases the lease; the standby takes over well before the
	// 15 s lease would have expired.
	stoppedAt := time.Now()
	first.stop()
	testenv.Eventually(t, 12*time.Second, func() error {
		h, err := leaseHolder()
		if err != nil {
			return err
		}
		if h == leader {
			return fmt.Errorf("lease still held by the stopped leader %s", h)
		}
		return nil
	})
	t.Logf("leadership moved %v after the leader stopped", time.Since(stoppedAt).Round(100*time.Millisecond))
}

// An operator started while its API server does not answer waits for it instead of exiting
// (the kubelet would restart it with a growing back-off), and serves once it answers.
func TestOperatorWaitsForTheAPIServer(t *testing.T) {
	bin, kubeconfig := buildOperator(t)
	// The operator's kubeconfig names a port where nothing listens yet.
	cfg, err := clientcmd.LoadFromFile(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	port := testenv.FreePort(t)
	for _, c := range cfg.Clusters {
		c.Server = "https://127.0.0.1:" + strconv.Itoa(port)
	}
	away := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, away); err != nil {
		t.Fatal(err)
	}
	r := startReplica(t, bin, away)
	time.Sleep(4 * time.Second)
	if err := r.cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("the operator exited while its API server did not answer: %v", err)
	}
	if code, _, err := get("http://" + r.probe + "/readyz"); err == nil && code == http.StatusOK {
		t.Fatal("the operator says it is ready without an API server")
	}
	// The API server answers at that port now.
	u, err := url.Parse(env.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	t.Cleanup(stop)
	go func() { _ = forward.Forward(ctx, l, u.Host) }()
	opened := time.Now()
	testenv.Eventually(t, 60*time.Second, func() error {
		code, body, err := get("http://" + r.probe + "/readyz")
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("readyz: %d %s", code, body)
		}
		return nil
	})
	t.Logf("ready %v after the API server answered", time.Since(opened).Round(100*time.Millisecond))
}
