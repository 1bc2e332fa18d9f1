package securemetrics_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/weft-net/weft/internal/securemetrics"
	"github.com/weft-net/weft/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &env) }

// TestServesOnlyReaders serves a registry with one counter on an ephemeral port: a caller
// without a token gets 401, a service account without the reader role 403, one with it the
// counter; plain HTTP is not answered.
func TestServesOnlyReaders(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_test_served_total", Help: "a test counter"})
	c.Add(3)
	reg.MustRegister(c)
	addr, err := securemetrics.Serve(ctx, testr.New(t), "127.0.0.1:0", reg, env.Config)
	if err != nil {
		t.Fatal(err)
	}
	url := "https://" + addr.String() + "/metrics"
	testenv.MetricsServedOnlyToReaders(t, env.Config, url, "weft_test_served_total 3")
	if resp, err := http.Get("http://" + addr.String() + "/metrics"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("plain HTTP answered %s", resp.Status)
		}
	}
	cancel()
	testenv.Eventually(t, 5*time.Second, func() error {
		code, _, err := testenv.GetAs(url, "")
		if err == nil {
			return fmt.Errorf("after the context ended: answered %d, want connection refused", code)
		}
		if !strings.Contains(err.Error(), "refused") {
			return fmt.Errorf("after the context ended: %w, want connection refused", err)
		}
		return nil
	})
}
