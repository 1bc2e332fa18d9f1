package kubelet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"

	"github.com/weft-net/weft/lab/images"
	"github.com/weft-net/weft/lab/netlab"
)

// Provider runs the pods bound to one lab node.
type Provider struct {
	cfg      Config
	client   kubernetes.Interface
	cms      corev1listers.ConfigMapLister
	secrets  corev1listers.SecretLister
	services corev1listers.ServiceLister
	pods     corev1listers.PodLister // this node's pods as the API server has them
	images   *images.Table
	recorder record.EventRecorder
	self     string
	capacity corev1.ResourceList
	log      klog.Logger

	mu      sync.Mutex
	runners map[string]*podRunner // by namespace/name
	notify  func(*corev1.Pod)
}

func key(ns, name string) string { return ns + "/" + name }

// Capacity the lab nodes advertise: generous, so scheduling never fails for resources.
var Capacity = corev1.ResourceList{
	corev1.ResourceCPU:              resource.MustParse("8"),
	corev1.ResourceMemory:           resource.MustParse("16Gi"),
	corev1.ResourcePods:             resource.MustParse("110"),
	corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
}

func (p *Provider) configMap(ns, name string) (*corev1.ConfigMap, error) {
	if cm, err := p.cms.ConfigMaps(ns).Get(name); err == nil {
		return cm, nil
	}
	return p.client.CoreV1().ConfigMaps(ns).Get(context.Background(), name, metav1.GetOptions{})
}

func (p *Provider) secret(ns, name string) (*corev1.Secret, error) {
	if s, err := p.secrets.Secrets(ns).Get(name); err == nil {
		return s, nil
	}
	return p.client.CoreV1().Secrets(ns).Get(context.Background(), name, metav1.GetOptions{})
}

func (p *Provider) envSources(pod *corev1.Pod, podIPs []string) envSources {
	svcs, _ := p.services.Services(pod.Namespace).List(labels.Everything())
	sort.Slice(svcs, func(i, j int) bool { return svcs[i].Name < svcs[j].Name })
	master, _ := p.services.Services("default").Get("kubernetes")
	return envSources{pod: pod, podIPs: podIPs, hostIP: p.cfg.NodeIP, services: svcs, master: master,
		configMap: p.configMap, secret: p.secret, capacity: p.capacity}
}

// CreatePod starts running a pod.
func (p *Provider) CreatePod(_ context.Context, pod *corev1.Pod) error {
	p.mu.Lock()
	old := p.runners[key(pod.Namespace, pod.Name)]
	p.mu.Unlock()
	if old != nil {
		if old.uid() == pod.UID {
			return nil
		}
		old.terminate(0) // a pod of the same name replaced the old one
	}
	r := newPodRunner(p, pod)
	p.mu.Lock()
	p.runners[key(pod.Namespace, pod.Name)] = r
	p.mu.Unlock()
	go r.run()
	return nil
}

// UpdatePod takes a new spec (only metadata and readiness-relevant fields matter here).
func (p *Provider) UpdatePod(_ context.Context, pod *corev1.Pod) error {
	if r := p.runner(pod.Namespace, pod.Name); r != nil && r.uid() == pod.UID {
		r.updateSpec(pod)
	}
	return nil
}

// DeletePod stops a pod's containers within its grace period, tears down its network, and
// removes the Pod object at once (grace 0) so deletion does not wait for a timer.
func (p *Provider) DeletePod(_ context.Context, pod *corev1.Pod) error {
	r := p.runner(pod.Namespace, pod.Name)
	if r == nil || r.uid() != pod.UID {
		return errdefs.NotFoundf("pod %s/%s is not on this node", pod.Namespace, pod.Name)
	}
	grace := int64(30)
	if pod.Spec.TerminationGracePeriodSeconds != nil {
		grace = *pod.Spec.TerminationGracePeriodSeconds
	}
	if pod.DeletionGracePeriodSeconds != nil {
		grace = *pod.DeletionGracePeriodSeconds
	}
	go func() {
		r.terminate(time.Duration(grace) * time.Second)
		p.mu.Lock()
		if p.runners[key(pod.Namespace, pod.Name)] == r {
			delete(p.runners, key(pod.Namespace, pod.Name))
		}
		p.mu.Unlock()
		err := p.client.CoreV1().Pods(pod.Namespace).Delete(context.Background(), pod.Name, metav1.DeleteOptions{
			GracePeriodSeconds: new(int64),
			Preconditions:      metav1.NewUIDPreconditions(string(pod.UID)),
		})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			p.log.Error(err, "removing terminated pod", "pod", key(pod.Namespace, pod.Name))
		}
	}()
	return nil
}

func (p *Provider) runner(ns, name string) *podRunner {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.runners[key(ns, name)]
}

// GetPod returns a pod with its current status.
func (p *Provider) GetPod(_ context.Context, ns, name string) (*corev1.Pod, error) {
	r := p.runner(ns, name)
	if r == nil {
		return nil, errdefs.NotFoundf("pod %s/%s is not on this node", ns, name)
	}
	return r.podWithStatus(), nil
}

// GetPodStatus returns a pod's current status.
func (p *Provider) GetPodStatus(ctx context.Context, ns, name string) (*corev1.PodStatus, error) {
	pod, err := p.GetPod(ctx, ns, name)
	if err != nil {
		return nil, err
	}
	return &pod.Status, nil
}

// GetPods returns every pod on the node.
func (p *Provider) GetPods(context.Context) ([]*corev1.Pod, error) {
	rs := p.allRunners()
	out := make([]*corev1.Pod, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.podWithStatus())
	}
	return out, nil
}

// allRunners is a snapshot of the pods' runners (taken under the lock, used without it).
func (p *Provider) allRunners() []*podRunner {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Collect(maps.Values(p.runners))
}

// NotifyPods registers the callback for status changes.
func (p *Provider) NotifyPods(_ context.Context, cb func(*corev1.Pod)) {
	p.mu.Lock()
	p.notify = cb
	p.mu.Unlock()
}

func (p *Provider) notifyPod(pod *corev1.Pod) {
	p.mu.Lock()
	cb := p.notify
	p.mu.Unlock()
	if cb != nil {
		cb(pod)
	}
}

// GetContainerLogs serves `kubectl logs`.
func (p *Provider) GetContainerLogs(ctx context.Context, ns, name, container string, opts api.ContainerLogOpts) (io.ReadCloser, error) {
	r := p.runner(ns, name)
	if r == nil {
		return nil, errdefs.NotFoundf("pod %s/%s is not on this node", ns, name)
	}
	return r.logs(ctx, container, opts)
}

// RunInContainer serves `kubectl exec`.
func (p *Provider) RunInContainer(ctx context.Context, ns, name, container string, cmd []string, attach api.AttachIO) error {
	r := p.runner(ns, name)
	if r == nil {
		return errdefs.NotFoundf("pod %s/%s is not on this node", ns, name)
	}
	return r.exec(ctx, container, cmd, attach)
}

// AttachToContainer is not supported: lab containers' stdio goes to their logs.
func (p *Provider) AttachToContainer(context.Context, string, string, string, api.AttachIO) error {
	return errdefs.InvalidInput("attach is not supported by the lab kubelet; use kubectl logs -f or exec")
}

// PortForward is not supported.
func (p *Provider) PortForward(context.Context, string, string, int32, io.ReadWriteCloser) error {
	return errdefs.InvalidInput("port-forward is not supported by the lab kubelet")
}

// GetStatsSummary reports the node and its pods without usage figures.
func (p *Provider) GetStatsSummary(context.Context) (*statsv1alpha1.Summary, error) {
	s := &statsv1alpha1.Summary{Node: statsv1alpha1.NodeStats{NodeName: p.cfg.NodeName, StartTime: metav1.Now()}}
	pods, _ := p.GetPods(context.Background())
	for _, pod := range pods {
		s.Pods = append(s.Pods, statsv1alpha1.PodStats{PodRef: statsv1alpha1.PodReference{
			Name: pod.Name, Namespace: pod.Namespace, UID: string(pod.UID)}})
	}
	return s, nil
}

// GetMetricsResource reports no metrics.
func (p *Provider) GetMetricsResource(context.Context) ([]*dto.MetricFamily, error) { return nil, nil }

// cleanupLeftovers removes what an earlier run of this kubelet left: processes in its pods'
// namespaces, their networks (CNI DEL, so addresses are released) and pod directories.
func (p *Provider) cleanupLeftovers(ctx context.Context) error {
	podsDir := filepath.Join(p.cfg.State, "pods")
	entries, err := os.ReadDir(podsDir)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	var errs []error
	for _, e := range entries {
		dir := filepath.Join(podsDir, e.Name())
		killRecordedGroups(dir)
		if data, err := os.ReadFile(filepath.Join(dir, "cni.json")); err == nil {
			var rec cniRecord
			if json.Unmarshal(data, &rec) == nil {
				killNetnsProcesses(rec.NetNS)
				if err := p.cniDel(ctx, rec); err != nil {
					errs = append(errs, err)
				}
				_ = p.delNetns(filepath.Base(rec.NetNS))
			}
		}
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
		}
	}
	names, _ := netlab.List(p.netnsPrefix())
	for _, n := range names {
		killNetnsProcesses(netlab.Path(n))
		_ = p.delNetns(n)
	}
	if len(errs) > 0 {
		return fmt.Errorf("cleaning up after the previous kubelet: %w", errors.Join(errs...))
	}
	return nil
}

func (p *Provider) netnsPrefix() string {
	prefix := p.cfg.NetnsPrefix
	if prefix == "" {
		prefix = "weftlab-pod-"
	}
	return prefix + strings.ReplaceAll(p.cfg.NodeName, ".", "-") + "-"
}

func killNetnsProcesses(path string) {
	ino, err := netlab.Inode(path)
	if err != nil {
		return
	}
	for _, pid := range netlab.PIDsIn(map[uint64]bool{ino: true}) {
		if proc, err := os.FindProcess(pid); err == nil {
			_ = proc.Kill()
		}
	}
}

// recordPID remembers a container's process group, so a later kubelet can end a host-network
// container that outlived its kubelet.
func (p *Provider) recordPID(r *podRunner, pid int) {
	appendLine(filepath.Join(r.dir, "pids"), strconv.Itoa(pid))
}

// recordCreated remembers a mount point created on the machine, for `weftctl lab down`.
func (p *Provider) recordCreated(path string) {
	if p.cfg.CreatedPaths != "" {
		appendLine(p.cfg.CreatedPaths, path)
	}
}

func appendLine(path, line string) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = f.WriteString(line + "\n")
}

func killRecordedGroups(podDir string) {
	data, _ := os.ReadFile(filepath.Join(podDir, "pids"))
	for _, l := range strings.Fields(string(data)) {
		if pid, err := strconv.Atoi(l); err == nil && pid > 1 {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
	}
}

// addNetns and delNetns run `ip netns` in the machine's mount namespace: a namespace mounted
// in the kubelet's own mount namespace would be invisible everywhere else.
func (p *Provider) addNetns(name string) error {
	if err := p.inHostMounts("ip", "netns", "add", name); err != nil {
		return err
	}
	return netlab.IP("-n", name, "link", "set", "lo", "up")
}

func (p *Provider) delNetns(name string) error {
	if _, err := os.Stat(netlab.Path(name)); err != nil {
		return nil
	}
	return p.inHostMounts("ip", "netns", "del", name)
}

func (p *Provider) inHostMounts(args ...string) error {
	if p.cfg.HostMountNS != "" {
		args = append([]string{"--mount=" + p.cfg.HostMountNS, "--"}, args...)
	} else {
		args = append([]string{"--"}, args...) // same namespace: run directly
	}
	out, err := exec.Command("nsenter", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// statusResync is how often the kubelet compares the pods' status in the API server with its
// own.
const statusResync = 10 * time.Second

// resyncStatuses reports a pod's status again when the API server's copy differs from the
// kubelet's: someone else wrote it — the node lifecycle controller marks the pods of a node
// it lost touch with not Ready, as it does after an API-server outage — and a real kubelet
// would put it right on its next status sync.
func (p *Provider) resyncStatuses(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if p.pods == nil {
			continue
		}
		for _, r := range p.allRunners() {
			mine := r.podWithStatus()
			theirs, err := p.pods.Pods(mine.Namespace).Get(mine.Name)
			if err != nil || statusAgrees(&theirs.Status, &mine.Status) {
				continue
			}
			p.log.Info("the API server's status of a pod differs from the kubelet's; reporting it again",
				"pod", key(mine.Namespace, mine.Name), "phase", theirs.Status.Phase)
			p.notifyPod(mine)
		}
	}
}

// statusAgrees compares what others act on: the phase, the addresses and the Ready and
// ContainersReady conditions.
func statusAgrees(api, kubelet *corev1.PodStatus) bool {
	if api.Phase != kubelet.Phase || api.PodIP != kubelet.PodIP {
		return false
	}
	for _, typ := range []corev1.PodConditionType{corev1.PodReady, corev1.ContainersReady} {
		if conditionStatus(api, typ) != conditionStatus(kubelet, typ) {
			return false
		}
	}
	return true
}

func conditionStatus(st *corev1.PodStatus, typ corev1.PodConditionType) corev1.ConditionStatus {
	for _, c := range st.Conditions {
		if c.Type == typ {
			return c.Status
		}
	}
	return ""
}
