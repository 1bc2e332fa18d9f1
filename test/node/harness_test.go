// Package node_test runs the real weft-agent and weft-cni binaries on simulated nodes:
// network namespaces with their own userspace Open vSwitch, a real API server (envtest) and
// the plugin executed the way a container runtime executes it.
package node_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weft-net/weft/agent"
	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/netnstest"
	"github.com/weft-net/weft/internal/ovsrun"
	"github.com/weft-net/weft/internal/testenv"
	"github.com/weft-net/weft/lab/forward"
)

var (
	env *testenv.Env
	bin string // weft-agent and weft-cni
)

func TestMain(m *testing.M) {
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	if os.Geteuid() != 0 {
		fmt.Println("skipping test/node: simulated nodes need root (network namespaces, Open vSwitch)")
		return 0, nil
	}
	dir, err := os.MkdirTemp("", "weft-node-bin-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	root, err := testenv.RepoRoot()
	if err != nil {
		return 0, err
	}
	build := exec.Command("go", "build", "-o", dir+"/", "./cmd/weft-agent", "./cmd/weft-cni")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("go build: %w\n%s", err, out)
	}
	bin = dir
	if env, err = testenv.Start(); err != nil {
		return 0, err
	}
	defer func() { _ = env.Stop() }()
	cn := &fabricv1.ClusterNetwork{ObjectMeta: metav1.ObjectMeta{Name: fabricv1.ClusterNetworkName},
		Spec: fabricv1.ClusterNetworkSpec{ClusterID: "east", PodCIDRs: []fabricv1.CIDR{"10.99.0.0/16"},
			ServiceCIDRs: []fabricv1.CIDR{"10.96.0.0/16"}}}
	if err := env.Client.Create(context.Background(), cn); err != nil {
		return 0, err
	}
	return m.Run(), nil
}

// simNode is a node: a namespace on the underlay switch, its Open vSwitch, its agent.
type simNode struct {
	t          testing.TB
	name       string
	ns         *netnstest.Netns
	ip         netip.Addr
	block      netip.Prefix
	dir        string
	ovsOpts    ovsrun.Options
	kubeconfig string
	agent      *exec.Cmd
	agentExit  chan struct{}
	launched   time.Time // when the running agent was started
	restarts   int
	// agentArgs are more flags for the agent (set before startAgent).
	agentArgs []string
}

func (n *simNode) socket() string   { return filepath.Join(n.dir, "run", "cni.sock") }
func (n *simNode) confDir() string  { return filepath.Join(n.dir, "net.d") }
func (n *simNode) cniBin() string   { return filepath.Join(n.dir, "cni-bin") }
func (n *simNode) stateDir() string { return filepath.Join(n.dir, "state") }
func (n *simNode) logPath() string  { return filepath.Join(n.dir, "agent.log") }

// newNode registers the node with the API server (address, pod block) and starts Open
// vSwitch and the agent in its namespace, returning once the agent is ready.
func newNode(t testing.TB, sw *netnstest.Switch, name, ip, block string, agentArgs ...string) *simNode {
	t.Helper()
	n := newNodeWaiting(t, sw, name, ip, block, agentArgs...)
	n.waitReady(n.launched)
	return n
}

// newNodeWaiting is newNode without waiting for the agent; block "" gives the node no
// FabricNode (no pod block: its agent waits for one).
func newNodeWaiting(t testing.TB, sw *netnstest.Switch, name, ip, block string, agentArgs ...string) *simNode {
	t.Helper()
	n := &simNode{t: t, name: name, ns: netnstest.New(t, name), ip: netip.MustParseAddr(ip),
		dir: t.TempDir(), agentArgs: agentArgs}
	if block != "" {
		n.block = netip.MustParsePrefix(block)
	}
	sw.Plug(t, n.ns, "p"+name, ip+"/24")
	ctx := context.Background()

	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := env.Client.Create(ctx, node); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), node) })
	// What the operator's nodeipam gives the node (no operator runs here).
	fn := &fabricv1.FabricNode{ObjectMeta: metav1.ObjectMeta{Name: name}}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), fn) })
	if block != "" {
		fn.Spec.PodCIDRs = []fabricv1.CIDR{fabricv1.CIDR(block)}
		if err := env.Client.Create(ctx, fn); err != nil {
			t.Fatal(err)
		}
	}
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}
	if err := env.Client.Status().Update(ctx, node); err != nil {
		t.Fatal(err)
	}

	n.ovsOpts = ovsrun.Options{RunDir: filepath.Join(n.dir, "ovs-run"), DBDir: filepath.Join(n.dir, "ovs-db"),
		LogDir: filepath.Join(n.dir, "ovs-log"), Netns: n.ns.Path(), UserspaceTSO: true, PacketSocketBuffer: ovsrun.DefaultPacketSocketBuffer}
	inst, err := ovsrun.Start(ctx, n.ovsOpts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(inst.Stop)

	kc, _, err := env.User("system:node:"+name, "system:masters")
	if err != nil {
		t.Fatal(err)
	}
	n.kubeconfig = filepath.Join(n.dir, "kubeconfig")
	if err := os.WriteFile(n.kubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	n.forwardAPIServer(t)
	n.launchAgent()
	t.Cleanup(func() {
		n.stopAgent(syscall.SIGTERM)
		if t.Failed() {
			if data, err := os.ReadFile(n.logPath()); err == nil {
				t.Logf("%s agent log (last 4 KiB):\n%s", name, tail(data, 4096))
			}
		}
	})
	return n
}

// forwardAPIServer makes the API server's loopback address reachable from inside the node's
// namespace: a listener there, connections relayed to the host's loopback.
func (n *simNode) forwardAPIServer(t testing.TB) {
	t.Helper()
	u, err := url.Parse(env.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	l, err := n.ns.Listen(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	t.Cleanup(stop)
	go func() { _ = forward.Forward(ctx, l, u.Host) }()
}

// startAgent runs weft-agent in the node's namespace and waits until it has written the
// CNI configuration (ready).
func (n *simNode) startAgent() {
	n.t.Helper()
	n.launchAgent()
	n.waitReady(n.launched)
}

// launchAgent runs weft-agent in the node's namespace.
func (n *simNode) launchAgent() {
	n.t.Helper()
	logf, err := os.OpenFile(n.logPath(), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		n.t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command("nsenter", "--net="+n.ns.Path(), "--", filepath.Join(bin, "weft-agent"),
		"--node-name="+n.name, "--kubeconfig="+n.kubeconfig, "--cni-socket="+n.socket(),
		"--cni-conf-dir="+n.confDir(), "--cni-bin-dir="+n.cniBin(), "--state-dir="+n.stateDir(),
		"--ovs-run-dir="+n.ovsOpts.RunDir, "--health-addr=0")
	cmd.Args = append(cmd.Args, n.agentArgs...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	n.agent, n.agentExit, n.launched = cmd, make(chan struct{}), time.Now()
	go func(c *exec.Cmd, done chan struct{}) { _ = c.Wait(); close(done) }(cmd, n.agentExit)
}

// waitReady waits until the agent has written the CNI configuration since started (a killed
// agent leaves its configuration behind, as on a real node; the new agent rewrites it when
// it is ready).
func (n *simNode) waitReady(started time.Time) {
	n.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if fi, err := os.Stat(filepath.Join(n.confDir(), agent.ConfFile)); err == nil && !fi.ModTime().Before(started) {
			return
		}
		select {
		case <-n.agentExit:
			data, _ := os.ReadFile(n.logPath())
			n.t.Fatalf("%s: weft-agent exited before it was ready:\n%s", n.name, tail(data, 4096))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			data, _ := os.ReadFile(n.logPath())
			n.t.Fatalf("%s: weft-agent not ready within 60s:\n%s", n.name, tail(data, 4096))
		}
	}
}

// stopAgent signals the agent (nsenter execs it: the PID is the agent's) and waits for it.
func (n *simNode) stopAgent(sig syscall.Signal) {
	if n.agent == nil {
		return
	}
	_ = n.agent.Process.Signal(sig)
	select {
	case <-n.agentExit:
	case <-time.After(10 * time.Second):
		_ = n.agent.Process.Kill()
		<-n.agentExit
	}
	n.agent = nil
}

// restartAgent kills the agent without warning and starts a new one.
func (n *simNode) restartAgent() {
	n.t.Helper()
	n.stopAgent(syscall.SIGKILL)
	n.restarts++
	n.startAgent()
}

// pod creates a pod bound to the node and a namespace standing for its sandbox.
func (n *simNode) pod(name string) (*corev1.Pod, *netnstest.Netns) {
	n.t.Helper()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: corev1.PodSpec{NodeName: n.name, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
	if err := env.Client.Create(context.Background(), p); err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(func() { _ = env.Client.Delete(context.Background(), p) })
	return p, netnstest.New(n.t, name)
}

// cniResult is the outcome of one plugin invocation.
type cniResult struct {
	result *current.Result
	code   int // CNI error code; 0 on success
	msg    string
}

func (r cniResult) err() error {
	if r.code == 0 {
		return nil
	}
	return fmt.Errorf("CNI error %d: %s", r.code, r.msg)
}

// cni executes weft-cni the way a container runtime does, with the configuration the agent
// wrote (or, while no agent has written one, the last one seen).
func (n *simNode) cni(command, containerID string, p *corev1.Pod, sandbox *netnstest.Netns) cniResult {
	n.t.Helper()
	conf, err := os.ReadFile(filepath.Join(n.confDir(), agent.ConfFile))
	if err != nil {
		conf = []byte(`{"cniVersion":"1.1.0","name":"weft","plugins":[{"type":"weft-cni","socket":"` + n.socket() + `"}]}`)
	}
	var list struct {
		CNIVersion string            `json:"cniVersion"`
		Name       string            `json:"name"`
		Plugins    []json.RawMessage `json:"plugins"`
	}
	if err := json.Unmarshal(conf, &list); err != nil || len(list.Plugins) != 1 {
		n.t.Fatalf("the agent's CNI configuration: %v\n%s", err, conf)
	}
	var plugin map[string]any
	_ = json.Unmarshal(list.Plugins[0], &plugin)
	plugin["cniVersion"], plugin["name"] = list.CNIVersion, list.Name
	stdin, _ := json.Marshal(plugin)

	out, errOut, runErr := n.execPlugin(filepath.Join(bin, "weft-cni"), command, containerID, p, sandbox, stdin)
	if runErr != nil {
		var e struct {
			Code int    `json:"code"`
			Msg  string `json:"msg"`
		}
		if err := json.Unmarshal([]byte(out), &e); err != nil || e.Code == 0 {
			n.t.Fatalf("weft-cni %s failed without a CNI error: %v\nstdout %q\nstderr %q", command, runErr, out, errOut)
		}
		return cniResult{code: e.Code, msg: e.Msg}
	}
	if command != "ADD" {
		return cniResult{}
	}
	res := &current.Result{}
	if err := json.Unmarshal([]byte(out), res); err != nil {
		n.t.Fatalf("ADD result: %v\n%s", err, out)
	}
	return cniResult{result: res}
}

// execPlugin executes a CNI plugin in the node's network namespace, as the node's container
// runtime would.
func (n *simNode) execPlugin(plugin, command, containerID string, p *corev1.Pod, sandbox *netnstest.Netns, stdin []byte) (stdout, stderr string, err error) {
	cmd := exec.Command("nsenter", "--net="+n.ns.Path(), "--", plugin)
	cmd.Env = []string{"CNI_COMMAND=" + command, "CNI_CONTAINERID=" + containerID, "CNI_NETNS=" + sandbox.Path(),
		"CNI_IFNAME=eth0", "CNI_PATH=" + filepath.Dir(plugin),
		fmt.Sprintf("CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=%s;K8S_POD_NAME=%s;K8S_POD_UID=%s", p.Namespace, p.Name, p.UID)}
	cmd.Stdin = strings.NewReader(string(stdin))
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// podIP is the pod's address from an ADD result.
func podIP(r cniResult) netip.Addr {
	if r.result == nil || len(r.result.IPs) == 0 {
		return netip.Addr{}
	}
	a, _ := netip.AddrFromSlice(r.result.IPs[0].Address.IP.To4())
	return a
}

// leftovers lists what a node holds for pods: address records, OVS pod ports, pod veths.
func (n *simNode) leftovers() []string {
	n.t.Helper()
	var left []string
	entries, err := os.ReadDir(filepath.Join(n.stateDir(), "ipam"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		n.t.Fatal(err)
	}
	for _, e := range entries {
		if _, err := netip.ParseAddr(e.Name()); err == nil {
			left = append(left, "address "+e.Name())
		}
	}
	out, err := exec.Command("ovs-vsctl", "--db="+n.ovsOpts.DBSocket(), "list-ports", "weft-int").CombinedOutput()
	if err != nil {
		n.t.Fatalf("ovs-vsctl list-ports: %v: %s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		if p != "weft-gw0" && p != "weft-tun0" {
			left = append(left, "port "+p)
		}
	}
	links, _ := n.ns.Run("ip", "-o", "link", "show", "type", "veth")
	for _, l := range strings.Split(strings.TrimSpace(links), "\n") {
		if f := strings.Fields(l); len(f) > 1 && strings.HasPrefix(f[1], "w") {
			left = append(left, "veth "+strings.TrimSuffix(f[1], ":"))
		}
	}
	return left
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
