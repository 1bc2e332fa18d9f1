package cniserver_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weft-net/weft/agent/cniserver"
	"github.com/weft-net/weft/agent/datapath/fake"
	"github.com/weft-net/weft/agent/ipam"
	"github.com/weft-net/weft/agent/podnet"
	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// These tests drive the real weft-cni binary the way a container runtime does (environment
// variables, configuration on stdin, result on stdout) against the agent's server with a
// fake datapath: the protocol and the error codes, not the wiring.

var plugin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "weft-cni")
	if err != nil {
		panic(err)
	}
	plugin = filepath.Join(dir, "weft-cni")
	build := exec.Command("go", "build", "-o", plugin, "github.com/weft-net/weft/cmd/weft-cni")
	if out, err := build.CombinedOutput(); err != nil {
		panic(string(out))
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

type agent struct {
	socket string
	dp     *fake.Datapath
	ipam   *ipam.Allocator
	ready  error
}

func startAgent(t *testing.T, pods map[string]*corev1.Pod) *agent {
	t.Helper()
	dir := t.TempDir()
	a := &agent{socket: filepath.Join(dir, "cni.sock"), dp: fake.New()}
	var err error
	if a.ipam, err = ipam.Open(filepath.Join(dir, "ipam")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.ipam.Close() })
	a.ipam.SetBlocks([]netip.Prefix{netip.MustParsePrefix("10.244.7.0/24")})
	h := &podnet.Handler{IPAM: a.ipam, Datapath: a.dp, Ready: func() error { return a.ready },
		Pod: func(_ context.Context, ns, name string) (*corev1.Pod, error) {
			if p, ok := pods[ns+"/"+name]; ok {
				return p, nil
			}
			return nil, errors.New("not found")
		}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- (&cniserver.Server{Handler: h, Socket: a.socket}).Serve(ctx) }()
	t.Cleanup(func() { cancel(); _ = <-done })
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(a.socket); err == nil {
			return a
		}
		if time.Now().After(deadline) {
			t.Fatal("the agent socket did not appear")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func conf(socket string) string {
	return `{"cniVersion":"1.1.0","name":"weft","type":"weft-cni","socket":"` + socket + `"}`
}

type run struct {
	stdout, stderr string
	code           int // CNI error code, 0 on success
	msg            string
}

// cni runs the plugin like a runtime does.
func cni(t *testing.T, command, container, config string, extraEnv ...string) run {
	t.Helper()
	cmd := exec.Command(plugin)
	cmd.Env = append([]string{"CNI_COMMAND=" + command, "CNI_CONTAINERID=" + container, "CNI_NETNS=/run/netns/" + container,
		"CNI_IFNAME=eth0", "CNI_PATH=/opt/cni/bin",
		"CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=" + container + ";K8S_POD_UID=uid-" + container}, extraEnv...)
	cmd.Stdin = strings.NewReader(config)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	r := run{stdout: out.String(), stderr: errOut.String()}
	if err != nil {
		var e struct {
			Code uint   `json:"code"`
			Msg  string `json:"msg"`
		}
		if jerr := json.Unmarshal([]byte(r.stdout), &e); jerr != nil {
			t.Fatalf("%s failed without a CNI error on stdout: %v\nstdout %q stderr %q", command, err, r.stdout, r.stderr)
		}
		r.code, r.msg = int(e.Code), e.Msg
	}
	return r
}

func TestAddCheckDelRoundTrip(t *testing.T) {
	a := startAgent(t, nil)
	c := conf(a.socket)
	r := cni(t, "ADD", "pod-a", c)
	if r.code != 0 {
		t.Fatalf("ADD failed: %d %s", r.code, r.msg)
	}
	var res struct {
		CNIVersion string `json:"cniVersion"`
		IPs        []struct {
			Address, Gateway string
			Interface        int
		} `json:"ips"`
		Interfaces []struct{ Name, Sandbox string } `json:"interfaces"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("ADD result is not JSON: %v: %s", err, r.stdout)
	}
	if res.CNIVersion != "1.1.0" || len(res.IPs) != 1 || res.IPs[0].Address != "10.244.7.2/24" || res.IPs[0].Gateway != "10.244.7.1" ||
		res.Interfaces[res.IPs[0].Interface].Sandbox != "/run/netns/pod-a" {
		t.Fatalf("ADD result: %s", r.stdout)
	}
	// A repeated ADD gives the same address.
	if again := cni(t, "ADD", "pod-a", c); !strings.Contains(again.stdout, `"10.244.7.2/24"`) {
		t.Errorf("repeated ADD: %s", again.stdout)
	}
	withPrev := `{"cniVersion":"1.1.0","name":"weft","type":"weft-cni","socket":"` + a.socket + `","prevResult":` + r.stdout + `}`
	if chk := cni(t, "CHECK", "pod-a", withPrev); chk.code != 0 {
		t.Errorf("CHECK after ADD: %d %s", chk.code, chk.msg)
	}
	if del := cni(t, "DEL", "pod-a", c); del.code != 0 {
		t.Fatalf("DEL: %d %s", del.code, del.msg)
	}
	if del := cni(t, "DEL", "pod-a", c); del.code != 0 {
		t.Errorf("a second DEL must succeed too: %d %s", del.code, del.msg)
	}
	if chk := cni(t, "CHECK", "pod-a", withPrev); chk.code != 3 {
		t.Errorf("CHECK after DEL: code %d (%s), want 3 (unknown container)", chk.code, chk.msg)
	}
	if allocs, _ := a.ipam.Allocations(); len(allocs) != 0 {
		t.Errorf("addresses left after DEL: %+v", allocs)
	}
}

func TestOlderCNIVersionsGetTheirResultFormat(t *testing.T) {
	a := startAgent(t, nil)
	r := cni(t, "ADD", "pod-old", `{"cniVersion":"0.4.0","name":"weft","type":"weft-cni","socket":"`+a.socket+`"}`)
	if r.code != 0 || !strings.Contains(r.stdout, `"cniVersion":"0.4.0"`) {
		t.Fatalf("ADD with 0.4.0: %d %s %s", r.code, r.msg, r.stdout)
	}
	v := cni(t, "VERSION", "", `{"cniVersion":"1.1.0"}`)
	if !strings.Contains(v.stdout, `"1.1.0"`) || !strings.Contains(v.stdout, `"0.4.0"`) {
		t.Errorf("VERSION: %s", v.stdout)
	}
}

func TestErrorsCarryTheSpecCodes(t *testing.T) {
	a := startAgent(t, map[string]*corev1.Pod{
		"shop/fixed-bad": {ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{fabricv1.AnnotationPodIP: "10.9.9.9"}}},
		"shop/fixed-ok":  {ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{fabricv1.AnnotationPodIP: "10.244.7.77"}}},
	})
	cases := []struct {
		name, command, container, config string
		env                              []string
		code                             int
		msg                              string
	}{
		{"not JSON", "ADD", "x", `{nope`, nil, 6, ""},
		{"relative socket", "ADD", "x", `{"cniVersion":"1.1.0","name":"weft","type":"weft-cni","socket":"cni.sock"}`, nil, 7, "invalid network configuration"},
		{"no network name", "ADD", "x", `{"cniVersion":"1.1.0","type":"weft-cni","socket":"` + a.socket + `"}`, nil, 7, "missing network name"},
		{"no Kubernetes pod args", "ADD", "x", conf(a.socket), []string{"CNI_ARGS=IgnoreUnknown=1"}, 4, "CNI_ARGS lack K8S_POD_NAMESPACE"},
		{"fixed address outside the block", "ADD", "fixed-bad", conf(a.socket), nil, 101, "the requested pod address cannot be given"},
		{"agent not running", "ADD", "x", conf("/run/weft-nonexistent/cni.sock"), nil, 11, "weft-agent is not running on this node"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := cni(t, c.command, c.container, c.config, c.env...)
			if r.code != c.code || !strings.Contains(r.msg, c.msg) {
				t.Errorf("code %d msg %q; want code %d and %q", r.code, r.msg, c.code, c.msg)
			}
		})
	}
	if r := cni(t, "ADD", "fixed-ok", conf(a.socket)); !strings.Contains(r.stdout, `"10.244.7.77/24"`) {
		t.Errorf("fixed address in the block: %d %s %s", r.code, r.msg, r.stdout)
	}
	a.ready = errors.New("the datapath is starting")
	if r := cni(t, "STATUS", "", conf(a.socket)); r.code != 50 {
		t.Errorf("STATUS while not ready: code %d %s, want 50", r.code, r.msg)
	}
	if r := cni(t, "ADD", "y", conf(a.socket)); r.code != 50 {
		t.Errorf("ADD while not ready: code %d %s, want 50", r.code, r.msg)
	}
	a.ready = nil
	if r := cni(t, "STATUS", "", conf(a.socket)); r.code != 0 {
		t.Errorf("STATUS when ready: code %d %s", r.code, r.msg)
	}
}

func TestGCReleasesUnknownAttachments(t *testing.T) {
	a := startAgent(t, nil)
	for _, c := range []string{"keep", "drop1", "drop2"} {
		if r := cni(t, "ADD", c, conf(a.socket)); r.code != 0 {
			t.Fatalf("ADD %s: %s", c, r.msg)
		}
	}
	gc := `{"cniVersion":"1.1.0","name":"weft","type":"weft-cni","socket":"` + a.socket +
		`","cni.dev/valid-attachments":[{"containerID":"keep","ifname":"eth0"}]}`
	if r := cni(t, "GC", "", gc); r.code != 0 {
		t.Fatalf("GC: %d %s", r.code, r.msg)
	}
	allocs, _ := a.ipam.Allocations()
	pods, _ := a.dp.Pods(context.Background())
	if len(allocs) != 1 || allocs[0].Owner.ContainerID != "keep" || len(pods) != 1 || pods[0].Key.ContainerID != "keep" {
		t.Errorf("after GC: allocations %+v pods %+v; want only keep", allocs, pods)
	}
}

func TestFailedWiringReleasesTheAddress(t *testing.T) {
	a := startAgent(t, nil)
	a.dp.FailAdd = errors.New("ovs is down")
	r := cni(t, "ADD", "pod-x", conf(a.socket))
	if r.code != 102 || !strings.Contains(r.msg, "weft-agent failed") {
		t.Errorf("ADD with a failing datapath: %d %s", r.code, r.msg)
	}
	if allocs, _ := a.ipam.Allocations(); len(allocs) != 0 {
		t.Errorf("a failed ADD held %+v", allocs)
	}
}
