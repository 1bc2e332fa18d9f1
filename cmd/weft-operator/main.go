// Command weft-operator reconciles weft's fabric objects: a thin main around
// cmd/weft-operator/manager.
package main

import (
	"flag"
	"fmt"
	"os"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/weft-net/weft/cmd/weft-operator/manager"
	"github.com/weft-net/weft/internal/operator"
	"github.com/weft-net/weft/internal/quietlog"
)

func main() {
	cfg := operator.DefaultConfig()
	cfg.AddFlags(flag.CommandLine)
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(quietlog.Wrap(zap.New(zap.UseFlagOptions(&zapOpts))))

	ctx := ctrl.SetupSignalHandler()
	restCfg, err := ctrl.GetConfig()
	if err != nil {
		fmt.Fprintln(os.Stderr, "weft-operator: no Kubernetes configuration:", err)
		os.Exit(1)
	}
	mgr, err := manager.NewManagerWhenReachable(ctx, cfg, restCfg, ctrl.Log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "weft-operator:", err)
		os.Exit(1)
	}
	ctrl.Log.Info("starting weft-operator", "namespace", cfg.Namespace, "leaderElect", cfg.LeaderElect)
	if cfg.LeaderElect {
		ctrl.Log.Info("standing by until this replica holds the leader lease: one replica runs the controllers, the other takes over when it goes")
		go func() {
			select {
			case <-mgr.Elected():
				ctrl.Log.Info("this replica leads: its controllers run")
			case <-ctx.Done():
			}
		}()
	}
	if err := mgr.Start(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "weft-operator:", err)
		os.Exit(1)
	}
}
