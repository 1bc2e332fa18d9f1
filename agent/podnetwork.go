package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/weft-net/weft/agent/cniserver"
	"github.com/weft-net/weft/agent/ipam"
	"github.com/weft-net/weft/agent/podnet"
	"github.com/weft-net/weft/internal/statefile"
)

// podNetwork wires pods: addresses from the node's blocks (agent/ipam), the CNI server the
// weft-cni plugin calls (agent/podnet, agent/cniserver), and the plugin and its
// configuration, installed once it can serve. The pods of this node come from an informer
// of their own, filtered by the API server.
type podNetwork struct {
	a      *agentState
	policy *policyEngine // a pod is reported wired once its policy is in the datapath
}

func (p *podNetwork) start(ctx context.Context, f *fabric) error {
	a, in := p.a, f.in
	store, err := ipam.Open(filepath.Join(a.cfg.StateDir, "ipam"))
	if err != nil {
		return err
	}
	f.onStop(func() { _ = store.Close() })
	store.SetBlocks(in.node.PodCIDRs)

	factory := informers.NewSharedInformerFactoryWithOptions(a.cs, 10*time.Minute,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", a.cfg.NodeName).String()
		}))
	pods := factory.Core().V1().Pods()
	_ = pods.Informer() // register before Start, or it never runs
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), pods.Informer().HasSynced) {
		return ctx.Err()
	}
	a.own.sources.Store(&metricSources{dp: f.datapath, policy: p.policy})
	h := &podnet.Handler{IPAM: store, Datapath: f.datapath, Ready: a.ready, Wired: p.policy.sync,
		Pod: func(_ context.Context, ns, name string) (*corev1.Pod, error) { return pods.Lister().Pods(ns).Get(name) }}
	live, _ := pods.Lister().List(labels.Everything())
	if err := h.Reconcile(ctx, derefPods(live)); err != nil {
		a.log.Error(err, "reconciling addresses and wiring with the pods on this node")
	}
	f.spawn(func() {
		err := (&cniserver.Server{Handler: a.own.timed(h), Socket: a.cfg.CNISocket}).Serve(ctx)
		if ctx.Err() == nil {
			if err == nil {
				err = errors.New("it stopped")
			}
			f.fail(fmt.Errorf("CNI server: %w", err))
		}
	})
	if err := a.installPlugin(); err != nil {
		return err
	}
	if err := a.writeConf(); err != nil {
		return err
	}
	f.onStop(a.removeConf)
	a.notReady.Store("")
	caps := f.datapath.Capabilities()
	a.log.Info("weft-agent is ready", "datapath", caps.Mode, "blocks", in.node.PodCIDRs, "encapsulation", in.node.Encapsulation)
	if err := a.report.ready(ctx, metav1.ConditionTrue, "Serving", fmt.Sprintf("the %s datapath serves %v", in.backend, in.node.PodCIDRs)); err != nil {
		a.reportFailed(err, "reporting the node ready")
	}
	return nil
}

func derefPods(ps []*corev1.Pod) []corev1.Pod {
	out := make([]corev1.Pod, len(ps))
	for i, p := range ps {
		out[i] = *p
	}
	return out
}

// installPlugin copies weft-cni (shipped next to the agent binary) into the CNI directory,
// atomically, so the runtime never executes a half-written file.
func (a *agentState) installPlugin() error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if resolved, err := filepath.EvalSymlinks(self); err == nil {
		self = resolved
	}
	src := filepath.Join(filepath.Dir(self), "weft-cni")
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("the weft-cni binary should ship beside weft-agent: %w", err)
	}
	defer in.Close()
	if err := os.MkdirAll(a.cfg.CNIBinDir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(a.cfg.CNIBinDir, ".weft-cni-")
	if err != nil {
		return err
	}
	if _, err := io.Copy(tmp, in); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := errors.Join(tmp.Chmod(0o755), tmp.Close()); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(a.cfg.CNIBinDir, "weft-cni"))
}

func (a *agentState) confPath() string { return filepath.Join(a.cfg.CNIConfDir, ConfFile) }

// writeConf announces the network to the container runtime: only now can pods be wired.
func (a *agentState) writeConf() error {
	conf := fmt.Sprintf(`{
  "cniVersion": "1.1.0",
  "name": "weft",
  "plugins": [
    {"type": "weft-cni", "socket": %q}
  ]
}
`, a.cfg.CNISocket)
	return statefile.Write(a.confPath(), []byte(conf), 0o644, 0o755)
}

func (a *agentState) removeConf() { _ = os.Remove(a.confPath()) }
