package kubelet

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func running() corev1.ContainerStatus {
	return corev1.ContainerStatus{State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}
}

func exited(code int32) corev1.ContainerStatus {
	return corev1.ContainerStatus{State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code}}}
}

func backingOff() corev1.ContainerStatus {
	return corev1.ContainerStatus{State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}},
		LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1}}}
}

func creating() corev1.ContainerStatus {
	return corev1.ContainerStatus{State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}}
}

func TestPhase(t *testing.T) {
	pod := func(policy corev1.RestartPolicy) *corev1.Pod {
		return &corev1.Pod{Spec: corev1.PodSpec{RestartPolicy: policy}}
	}
	cases := []struct {
		name     string
		policy   corev1.RestartPolicy
		init     []corev1.ContainerStatus
		initDone bool
		cs       []corev1.ContainerStatus
		want     corev1.PodPhase
	}{
		{"still creating", corev1.RestartPolicyAlways, nil, true, []corev1.ContainerStatus{creating()}, corev1.PodPending},
		{"init running", corev1.RestartPolicyAlways, []corev1.ContainerStatus{running()}, false, []corev1.ContainerStatus{creating()}, corev1.PodPending},
		{"init failed, Never", corev1.RestartPolicyNever, []corev1.ContainerStatus{exited(2)}, false, []corev1.ContainerStatus{creating()}, corev1.PodFailed},
		{"init failed, OnFailure retries", corev1.RestartPolicyOnFailure, []corev1.ContainerStatus{exited(2)}, false, []corev1.ContainerStatus{creating()}, corev1.PodPending},
		{"all running", corev1.RestartPolicyAlways, nil, true, []corev1.ContainerStatus{running(), running()}, corev1.PodRunning},
		{"crash looping is still Running", corev1.RestartPolicyAlways, nil, true, []corev1.ContainerStatus{backingOff()}, corev1.PodRunning},
		{"one done, one running", corev1.RestartPolicyNever, nil, true, []corev1.ContainerStatus{exited(0), running()}, corev1.PodRunning},
		{"all succeeded", corev1.RestartPolicyNever, nil, true, []corev1.ContainerStatus{exited(0), exited(0)}, corev1.PodSucceeded},
		{"one failed, Never", corev1.RestartPolicyNever, nil, true, []corev1.ContainerStatus{exited(0), exited(3)}, corev1.PodFailed},
		{"OnFailure, succeeded", corev1.RestartPolicyOnFailure, nil, true, []corev1.ContainerStatus{exited(0)}, corev1.PodSucceeded},
	}
	for _, c := range cases {
		st := corev1.PodStatus{InitContainerStatuses: c.init, ContainerStatuses: c.cs}
		if got := phase(pod(c.policy), st, c.initDone); got != c.want {
			t.Errorf("%s: phase = %s, want %s", c.name, got, c.want)
		}
	}
}

func TestResolvConf(t *testing.T) {
	p := &Provider{cfg: Config{ClusterDNS: "10.96.0.10", ClusterDomain: "cluster.local"}}
	ndots := "2"
	cases := []struct {
		name string
		spec corev1.PodSpec
		want string
	}{
		{"cluster first", corev1.PodSpec{},
			"nameserver 10.96.0.10\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"},
		{"host network falls back to Default: no upstream in the lab", corev1.PodSpec{HostNetwork: true}, ""},
		{"host network with ClusterFirstWithHostNet", corev1.PodSpec{HostNetwork: true, DNSPolicy: corev1.DNSClusterFirstWithHostNet},
			"nameserver 10.96.0.10\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"},
		{"None with dnsConfig", corev1.PodSpec{DNSPolicy: corev1.DNSNone, DNSConfig: &corev1.PodDNSConfig{
			Nameservers: []string{"1.2.3.4"}, Searches: []string{"example.com"}, Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: &ndots}, {Name: "edns0"}}}},
			"nameserver 1.2.3.4\nsearch example.com\noptions ndots:2 edns0\n"},
	}
	for _, c := range cases {
		r := &podRunner{p: p, pod: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop"}, Spec: c.spec}}
		if got := r.resolvConf(); got != c.want {
			t.Errorf("%s:\n got %q\nwant %q", c.name, got, c.want)
		}
	}
}

func TestHostPath(t *testing.T) {
	cfg := Config{Root: "/lab/n1/root"}
	for in, want := range map[string]string{
		"/etc/cni/net.d":    "/lab/n1/root/etc/cni/net.d",
		"/var/run/weft":     "/lab/n1/root/run/weft",
		"/var/run":          "/lab/n1/root/run",
		"/var/runner":       "/lab/n1/root/var/runner",
		"/proc":             "/proc",
		"/sys/fs/bpf":       "/sys/fs/bpf",
		"/run/netns":        "/run/netns",
		"/var/run/netns/x":  "/run/netns/x",
		"/procfoo":          "/lab/n1/root/procfoo",
		"/../../etc/passwd": "/lab/n1/root/etc/passwd",
		"relative/dir":      "/lab/n1/root/relative/dir",
	} {
		if got := cfg.HostPath(in); got != want {
			t.Errorf("HostPath(%q) = %q, want %q", in, got, want)
		}
	}
}

// The node lifecycle controller's "not Ready" (written while the API server could not hear
// from the node) differs from the kubelet's view: the kubelet reports its own again.
func TestStatusAgreesOnlyOnWhatOthersActOn(t *testing.T) {
	ready := func(s corev1.ConditionStatus) corev1.PodStatus {
		return corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.1.5", Conditions: []corev1.PodCondition{
			{Type: corev1.PodReady, Status: s}, {Type: corev1.ContainersReady, Status: corev1.ConditionTrue}}}
	}
	mine, theirs := ready(corev1.ConditionTrue), ready(corev1.ConditionFalse)
	if statusAgrees(&theirs, &mine) {
		t.Error("a pod marked not Ready by someone else agrees with the kubelet's Ready")
	}
	same := ready(corev1.ConditionTrue)
	same.Conditions[0].LastTransitionTime = metav1.Now() // times are not compared
	if !statusAgrees(&same, &mine) {
		t.Error("the same status disagrees")
	}
	moved := ready(corev1.ConditionTrue)
	moved.PodIP = "10.244.1.6"
	if statusAgrees(&moved, &mine) {
		t.Error("another address agrees")
	}
}
