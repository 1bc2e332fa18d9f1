// Package testenv starts a real kube-apiserver and etcd (envtest) with weft's CRDs installed,
// for the controller test suites. The binaries come from KUBEBUILDER_ASSETS, or, when that is
// unset, from hack/envtest-assets.sh, which builds them once into the cache.
//
// It is for tests only; nothing in a shipped binary imports it.
package testenv

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/weft-net/weft/internal/operator"
)

// Env is one running API server with a client for it.
type Env struct {
	Config *rest.Config
	Client client.Client
	env    *envtest.Environment
}

var assetsOnce struct {
	sync.Once
	dir string
	err error
}

// Assets returns the directory with kube-apiserver, etcd and kubectl.
func Assets() (string, error) {
	assetsOnce.Do(func() {
		if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
			assetsOnce.dir = dir
			return
		}
		root, err := RepoRoot()
		if err != nil {
			assetsOnce.err = err
			return
		}
		var out, errOut bytes.Buffer
		cmd := exec.Command(filepath.Join(root, "hack", "envtest-assets.sh"))
		cmd.Stdout, cmd.Stderr = &out, &errOut
		if err := cmd.Run(); err != nil {
			assetsOnce.err = fmt.Errorf("hack/envtest-assets.sh: %w\n%s", err, errOut.String())
			return
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		assetsOnce.dir = lines[len(lines)-1]
	})
	return assetsOnce.dir, assetsOnce.err
}

// RepoRoot finds the module root from the working directory (tests run in their package dir).
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Start runs an API server with weft's CRDs and the operator's namespace.
func Start() (*Env, error) {
	assets, err := Assets()
	if err != nil {
		return nil, err
	}
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{filepath.Join(root, "config", "crd", "bases"), filepath.Join(root, "config", "crd", "mcs")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		// envtest leaves etcd and kube-apiserver running when, say, installing a CRD fails:
		// stop them, or they outlive the test binary (and load the machine).
		_ = env.Stop()
		return nil, fmt.Errorf("starting envtest from %s: %w", assets, err)
	}
	c, err := client.New(cfg, client.Options{Scheme: operator.NewScheme()})
	if err != nil {
		_ = env.Stop()
		return nil, err
	}
	e := &Env{Config: cfg, Client: c, env: env}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "weft-system"}}
	if err := c.Create(ctx, ns); err != nil {
		_ = env.Stop()
		return nil, fmt.Errorf("creating namespace weft-system: %w", err)
	}
	return e, nil
}

// Stop shuts the API server and etcd down.
func (e *Env) Stop() error { return e.env.Stop() }

// User adds a user (authenticated by client certificate) and returns its kubeconfig and
// configuration. The user has no permissions until RBAC grants some.
func (e *Env) User(name string, groups ...string) ([]byte, *rest.Config, error) {
	u, err := e.env.AddUser(envtest.User{Name: name, Groups: groups}, e.Config)
	if err != nil {
		return nil, nil, err
	}
	kc, err := u.KubeConfig()
	if err != nil {
		return nil, nil, err
	}
	return kc, u.Config(), nil
}

// Main is a test binary's TestMain for suites against API servers: it starts one for each
// of envs (setting *envs[i]), runs the tests, stops the servers and exits with the tests'
// code. It does not return.
func Main(m *testing.M, envs ...**Env) {
	var started []*Env
	stop := func() {
		for _, e := range started {
			_ = e.Stop()
		}
	}
	for _, e := range envs {
		env, err := Start()
		if err != nil {
			stop()
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		*e = env
		started = append(started, env)
	}
	code := m.Run()
	stop()
	os.Exit(code)
}
