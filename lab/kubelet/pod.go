package kubelet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/weft-net/weft/lab/netlab"
)

// podRunner owns one pod: its network namespace, volumes and containers.
type podRunner struct {
	p      *Provider
	dir    string
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	// notifyMu serializes changed(): computing a status and publishing it must not
	// interleave with another call, or an older status could be published last.
	notifyMu sync.Mutex

	mu         sync.Mutex
	pod        *corev1.Pod
	startTime  metav1.Time
	netReady   bool
	netErr     string
	ips        []string
	netns      string // name, empty for host network
	cni        *cniRecord
	vols       *volumes
	initDone   bool
	init       []*containerRunner
	containers []*containerRunner
	terminated bool
	last       *corev1.PodStatus
}

func newPodRunner(p *Provider, pod *corev1.Pod) *podRunner {
	ctx, cancel := context.WithCancel(context.Background())
	r := &podRunner{p: p, pod: pod.DeepCopy(), ctx: ctx, cancel: cancel, done: make(chan struct{}),
		dir: filepath.Join(p.cfg.State, "pods", string(pod.UID)), startTime: metav1.Now()}
	for i := range pod.Spec.InitContainers {
		r.init = append(r.init, newContainerRunner(r, &r.pod.Spec.InitContainers[i], true))
	}
	for i := range pod.Spec.Containers {
		r.containers = append(r.containers, newContainerRunner(r, &r.pod.Spec.Containers[i], false))
	}
	return r
}

func (r *podRunner) uid() types.UID {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pod.UID
}

func (r *podRunner) updateSpec(pod *corev1.Pod) {
	r.mu.Lock()
	r.pod.Labels, r.pod.Annotations = pod.Labels, pod.Annotations
	r.mu.Unlock()
}

func (r *podRunner) hostNetwork() bool { return r.pod.Spec.HostNetwork }

func (r *podRunner) event(typ, reason, format string, args ...any) {
	r.p.recorder.Eventf(r.pod, typ, reason, format, args...)
}

// run sets the pod up and then supervises it until terminate.
func (r *podRunner) run() {
	defer close(r.done)
	r.changed()
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		r.setNetErr(err)
		return
	}
	if !retry(r.ctx, 5*time.Second, func() error { return r.setupNetwork() }, func(err error) {
		r.setNetErr(err)
		r.event(corev1.EventTypeWarning, "FailedCreatePodSandBox", "setting up the pod network: %v", err)
	}) {
		return
	}
	if !retry(r.ctx, 30*time.Second, func() error {
		r.vols = newVolumes(r.p, r.pod, r.dir)
		return r.vols.setup(r.ctx)
	}, func(err error) {
		r.setNetErr(err)
		r.event(corev1.EventTypeWarning, "FailedMount", "%v", err)
	}) {
		return
	}
	r.setNetErr(nil)
	go r.refreshVolumes()

	for _, c := range r.init {
		if !c.runToCompletion(r.ctx) {
			r.finishIfTerminal()
			return
		}
	}
	r.mu.Lock()
	r.initDone = true
	r.mu.Unlock()
	r.changed()

	var wg sync.WaitGroup
	for _, c := range r.containers {
		wg.Add(1)
		go func() { defer wg.Done(); c.supervise(r.ctx) }()
	}
	wg.Wait()
	r.finishIfTerminal()
}

// retry calls fn until it succeeds or ctx ends, reporting each failure; backoff from 1 s to
// max. Network setup retries often: a CNI configuration can appear at any moment.
func retry(ctx context.Context, max time.Duration, fn func() error, report func(error)) bool {
	backoff := time.Second
	for {
		err := fn()
		if err == nil {
			return true
		}
		report(err)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, max)
	}
}

func (r *podRunner) setNetErr(err error) {
	r.mu.Lock()
	if err == nil {
		r.netErr = ""
	} else {
		r.netErr = err.Error()
	}
	r.mu.Unlock()
	r.changed()
}

func (r *podRunner) setupNetwork() error {
	if r.hostNetwork() {
		r.mu.Lock()
		r.ips, r.netReady = []string{r.p.cfg.NodeIP}, true
		r.mu.Unlock()
		return r.writeNetworkFiles()
	}
	name := r.p.netnsPrefix() + strings.ReplaceAll(string(r.pod.UID), "-", "")[:12]
	if err := r.p.addNetns(name); err != nil {
		return err
	}
	ips, rec, err := r.p.cniAdd(r.ctx, r.pod, netlab.Path(name))
	recData, _ := json.Marshal(rec)
	if werr := os.WriteFile(filepath.Join(r.dir, "cni.json"), recData, 0o644); werr != nil && err == nil {
		err = werr
	}
	if err != nil {
		// Undo what the plugins did, so a retry starts clean and no address leaks.
		_ = r.p.cniDel(context.Background(), rec)
		_ = r.p.delNetns(name)
		_ = os.Remove(filepath.Join(r.dir, "cni.json"))
		return err
	}
	r.mu.Lock()
	r.netns, r.cni, r.ips, r.netReady = name, &rec, ips, true
	r.mu.Unlock()
	return r.writeNetworkFiles()
}

// writeNetworkFiles writes the pod's /etc/hosts and /etc/resolv.conf.
func (r *podRunner) writeNetworkFiles() error {
	pod := r.pod
	hosts := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
	if !r.hostNetwork() {
		hosts += fmt.Sprintf("%s\t%s\n", r.ips[0], pod.Name)
	}
	for _, ha := range pod.Spec.HostAliases {
		hosts += ha.IP + "\t" + strings.Join(ha.Hostnames, " ") + "\n"
	}
	if err := writeAtomic(filepath.Join(r.dir, "etc-hosts"), []byte(hosts), 0o644); err != nil {
		return err
	}
	return writeAtomic(filepath.Join(r.dir, "resolv.conf"), []byte(r.resolvConf()), 0o644)
}

func (r *podRunner) resolvConf() string {
	pod, cfg := r.pod, r.p.cfg
	policy := pod.Spec.DNSPolicy
	if policy == "" {
		policy = corev1.DNSClusterFirst
	}
	if pod.Spec.HostNetwork && policy == corev1.DNSClusterFirst {
		policy = corev1.DNSDefault
	}
	var servers, search []string
	options := []string{}
	switch policy {
	case corev1.DNSClusterFirst, corev1.DNSClusterFirstWithHostNet:
		servers = []string{cfg.ClusterDNS}
		search = []string{pod.Namespace + ".svc." + cfg.ClusterDomain, "svc." + cfg.ClusterDomain, cfg.ClusterDomain}
		options = append(options, "ndots:5")
	case corev1.DNSDefault:
		// The lab's nodes have no upstream resolver: lab traffic stays inside the lab.
	}
	if dc := pod.Spec.DNSConfig; dc != nil {
		servers = append(servers, dc.Nameservers...)
		search = append(search, dc.Searches...)
		for _, o := range dc.Options {
			if o.Value != nil {
				options = append(options, o.Name+":"+*o.Value)
			} else {
				options = append(options, o.Name)
			}
		}
	}
	var b strings.Builder
	for _, s := range servers {
		b.WriteString("nameserver " + s + "\n")
	}
	if len(search) > 0 {
		b.WriteString("search " + strings.Join(search, " ") + "\n")
	}
	if len(options) > 0 {
		b.WriteString("options " + strings.Join(options, " ") + "\n")
	}
	return b.String()
}

func (r *podRunner) refreshVolumes() {
	t := time.NewTicker(15 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
			if err := r.vols.render(r.ctx, false); err != nil {
				r.event(corev1.EventTypeWarning, "FailedMount", "refreshing volumes: %v", err)
			}
		}
	}
}

// finishIfTerminal releases the network of a pod that will run nothing more (all
// containers done under restartPolicy Never/OnFailure).
func (r *podRunner) finishIfTerminal() {
	st := r.podWithStatus().Status
	if st.Phase == corev1.PodSucceeded || st.Phase == corev1.PodFailed {
		r.teardownNetwork()
	}
}

// terminate stops the containers within grace (SIGTERM, then SIGKILL), stops supervision and
// tears the network down. It returns when everything is gone.
func (r *podRunner) terminate(grace time.Duration) {
	r.mu.Lock()
	already := r.terminated
	r.terminated = true
	r.mu.Unlock()
	if !already {
		// stop marks each container stopping first, so no restart can begin meanwhile.
		var wg sync.WaitGroup
		for _, c := range append(append([]*containerRunner{}, r.init...), r.containers...) {
			wg.Add(1)
			go func() { defer wg.Done(); c.stop(grace) }()
		}
		wg.Wait()
		r.cancel()
	}
	<-r.done
	r.teardownNetwork()
	r.changed()
	_ = os.RemoveAll(r.dir)
}

func (r *podRunner) teardownNetwork() {
	r.mu.Lock()
	rec, name := r.cni, r.netns
	r.cni, r.netns = nil, ""
	r.mu.Unlock()
	if rec != nil {
		killNetnsProcesses(rec.NetNS)
		if err := r.p.cniDel(context.Background(), *rec); err != nil {
			r.event(corev1.EventTypeWarning, "FailedKillPod", "tearing down the pod network: %v", err)
		}
	}
	if name != "" {
		if err := r.p.delNetns(name); err != nil {
			r.event(corev1.EventTypeWarning, "FailedKillPod", "removing the network namespace: %v", err)
		}
	}
	_ = os.Remove(filepath.Join(r.dir, "cni.json"))
}

// changed recomputes the status and tells virtual-kubelet when it differs.
func (r *podRunner) changed() {
	r.notifyMu.Lock()
	defer r.notifyMu.Unlock()
	pod := r.podWithStatus()
	r.mu.Lock()
	same := r.last != nil && equality.Semantic.DeepEqual(*r.last, pod.Status)
	r.last = pod.Status.DeepCopy()
	r.mu.Unlock()
	if !same {
		r.p.notifyPod(pod)
	}
}

// podWithStatus returns a copy of the pod with its current status.
func (r *podRunner) podWithStatus() *corev1.Pod {
	r.mu.Lock()
	pod := r.pod.DeepCopy()
	netReady, netErr, ips, initDone, terminated := r.netReady, r.netErr, r.ips, r.initDone, r.terminated
	last := r.last.DeepCopy()
	r.mu.Unlock()
	startTime := r.startTime

	st := corev1.PodStatus{
		HostIP:    r.p.cfg.NodeIP,
		HostIPs:   []corev1.HostIP{{IP: r.p.cfg.NodeIP}},
		StartTime: &startTime,
		QOSClass:  pod.Status.QOSClass, // set by the API server at creation, immutable
	}
	if netReady && !terminated {
		st.PodIP = ips[0]
		for _, ip := range ips {
			st.PodIPs = append(st.PodIPs, corev1.PodIP{IP: ip})
		}
	}
	for _, c := range r.init {
		st.InitContainerStatuses = append(st.InitContainerStatuses, c.status(netErr))
	}
	for _, c := range r.containers {
		st.ContainerStatuses = append(st.ContainerStatuses, c.status(netErr))
	}
	st.Phase = phase(pod, st, initDone)
	allReady := len(st.ContainerStatuses) > 0
	for _, cs := range st.ContainerStatuses {
		allReady = allReady && cs.Ready
	}
	now := metav1.Now()
	cond := func(t corev1.PodConditionType, ok bool, reason, msg string) corev1.PodCondition {
		c := corev1.PodCondition{Type: t, Status: corev1.ConditionFalse, LastTransitionTime: now, Reason: reason, Message: msg}
		if ok {
			c.Status, c.Reason, c.Message = corev1.ConditionTrue, "", ""
		}
		return c
	}
	st.Conditions = []corev1.PodCondition{
		cond(corev1.PodReadyToStartContainers, netReady && !terminated, "", netErr),
		cond(corev1.PodInitialized, initDone, "ContainersNotInitialized", ""),
		cond(corev1.ContainersReady, allReady, "ContainersNotReady", ""),
		cond(corev1.PodReady, allReady, "ContainersNotReady", ""),
		cond(corev1.PodScheduled, true, "", ""),
	}
	// Keep transition times stable across recomputations.
	for i := range st.Conditions {
		for _, old := range pod.Status.Conditions {
			if old.Type == st.Conditions[i].Type && old.Status == st.Conditions[i].Status {
				st.Conditions[i].LastTransitionTime = old.LastTransitionTime
			}
		}
		if last != nil {
			for _, old := range last.Conditions {
				if old.Type == st.Conditions[i].Type && old.Status == st.Conditions[i].Status {
					st.Conditions[i].LastTransitionTime = old.LastTransitionTime
				}
			}
		}
	}
	pod.Status = st
	return pod
}

// phase follows the kubelet's rules for a pod's phase.
func phase(pod *corev1.Pod, st corev1.PodStatus, initDone bool) corev1.PodPhase {
	policy := pod.Spec.RestartPolicy
	if !initDone {
		for _, cs := range st.InitContainerStatuses {
			if t := cs.State.Terminated; t != nil && t.ExitCode != 0 && policy == corev1.RestartPolicyNever {
				return corev1.PodFailed
			}
		}
		return corev1.PodPending
	}
	var running, waiting, succeeded, failed, neverStarted int
	for _, cs := range st.ContainerStatuses {
		switch {
		case cs.State.Running != nil:
			running++
		case cs.State.Terminated != nil && cs.State.Terminated.ExitCode == 0:
			succeeded++
		case cs.State.Terminated != nil:
			failed++
		case cs.LastTerminationState.Terminated != nil:
			waiting++ // restarting
		default:
			neverStarted++
		}
	}
	switch {
	case neverStarted > 0:
		return corev1.PodPending
	case running > 0 || waiting > 0:
		return corev1.PodRunning
	case failed > 0 && policy != corev1.RestartPolicyAlways:
		return corev1.PodFailed
	case succeeded > 0 && failed == 0 && policy != corev1.RestartPolicyAlways:
		return corev1.PodSucceeded
	}
	return corev1.PodRunning
}

var errNotRunning = errors.New("container is not running")
