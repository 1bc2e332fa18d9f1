// Package managertest runs the whole weft-operator in-process against an envtest API
// server, for the controllers' suites.
package managertest

import (
	"context"
	"strconv"
	"testing"

	"github.com/weft-net/weft/cmd/weft-operator/manager"
	"github.com/weft-net/weft/internal/operator"
	"github.com/weft-net/weft/internal/testenv"
)

// Start installs config/dev's webhook configuration pointed at a free port and runs
// the whole operator in-process against e until the test ends, as `make run` would. tune,
// when set, adjusts the configuration first.
func Start(t *testing.T, e *testenv.Env, tune func(*operator.Config)) {
	t.Helper()
	ctx := context.Background()
	port := testenv.FreePort(t)
	objs, err := testenv.Kustomize("config/dev", "127.0.0.1:10370", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if o.GetKind() == "ValidatingWebhookConfiguration" {
			if err := testenv.Apply(ctx, e.Client, o); err != nil {
				t.Fatal(err)
			}
		}
	}
	cfg := operator.DefaultConfig()
	cfg.MetricsAddr, cfg.ProbeAddr = "0", "0"
	cfg.Webhook.Port = port
	cfg.Webhook.CertDir = t.TempDir()
	cfg.Webhook.Hosts = []string{"127.0.0.1"}
	if tune != nil {
		tune(&cfg)
	}
	mgr, err := manager.NewManager(ctx, cfg, e.Config)
	if err != nil {
		t.Fatal(err)
	}
	testenv.RunManager(t, mgr)
}
