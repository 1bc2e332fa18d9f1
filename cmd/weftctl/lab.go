package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/weft-net/weft/lab"
	"github.com/weft-net/weft/lab/kubelet"
	"github.com/weft-net/weft/lab/netlab"
	"github.com/weft-net/weft/lab/router"
)

func cacheDir() string {
	if d := os.Getenv("WEFT_CACHE"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "weft")
}

// labStateDir is the lab's state directory unless --state says otherwise: $WEFT_LAB_STATE,
// else the cache's (so that a shell, or a test, can point every weftctl lab command at
// another lab at once).
func labStateDir() string {
	if d := os.Getenv("WEFT_LAB_STATE"); d != "" {
		return d
	}
	return filepath.Join(cacheDir(), "lab")
}

func labCommand() *cobra.Command {
	self, _ := os.Executable()
	opts := lab.Options{Name: "weft", Clusters: 2, Nodes: 2, CNI: "weft",
		WeftManifests: filepath.Join(filepath.Dir(self), "..", "config", "default"), APIPortBase: 16443, Timeout: 5 * time.Minute,
		StateDir: labStateDir(),
		KubeBin:  filepath.Join(cacheDir(), "k8s", "v1.37.2", "bin"),
		CoreDNS:  filepath.Join(cacheDir(), "coredns", "v1.15.0", "bin", "coredns"),
		CNIBin:   filepath.Join(cacheDir(), "cni-plugins", "v1.9.1", "bin"),
		WeftBin:  filepath.Dir(self), Self: self, Labtool: filepath.Join(filepath.Dir(self), "labtool")}

	cmd := &cobra.Command{Use: "lab", Short: "A multi-cluster lab on this machine: real control planes, nodes as network namespaces"}
	cmd.PersistentFlags().StringVar(&opts.StateDir, "state", opts.StateDir, "lab state directory")
	cmd.PersistentFlags().StringVar(&opts.Name, "name", opts.Name, "lab name: labs with different names and state directories can run side by side")
	addUpFlags := func(c *cobra.Command) {
		f := c.Flags()
		f.IntVar(&opts.Clusters, "clusters", opts.Clusters, "number of clusters")
		f.IntVar(&opts.Nodes, "nodes", opts.Nodes, "nodes per cluster")
		f.StringVar(&opts.CNI, "cni", opts.CNI, "CNI plugin for pods: "+strings.Join(lab.CNIs, ", "))
		f.StringSliceVar(&opts.Datapaths, "datapath", nil, "weft datapath backend by cluster (--cni weft): "+strings.Join(lab.DatapathBackends, ", ")+"; cluster i gets the i-th, the last repeats (default ovs)")
		f.StringSliceVar(&opts.Routers, "router", nil, "a BGP router per cluster (--cni weft): "+strings.Join(router.Kinds, ", ")+" or none; cluster i gets the i-th, the last repeats. With one, the cluster's nodes announce their pod blocks to it over BGP, an ebpf cluster runs without encapsulation, and an external host sits behind the router")
		f.BoolVar(&opts.Overlap, "overlap", false, "give the last cluster the first one's pod and service ranges, as clusters made with the same installer defaults have (weft joins them through aliases: docs/overlap.md)")
		f.StringVar(&opts.WeftManifests, "weft-manifests", opts.WeftManifests, "kustomization that installs weft (--cni weft)")
		f.IntVar(&opts.APIPortBase, "api-port", opts.APIPortBase, "host port of the first cluster's API server (127.0.0.1)")
		f.StringVar(&opts.KubeBin, "kube-bin", opts.KubeBin, "directory with etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy, kubectl")
		f.StringVar(&opts.CoreDNS, "coredns", opts.CoreDNS, "coredns binary")
		f.StringVar(&opts.CNIBin, "cni-bin", opts.CNIBin, "directory with the reference CNI plugins")
		f.StringVar(&opts.WeftBin, "weft-bin", opts.WeftBin, "directory with weft's binaries (weft-operator, ...)")
		f.StringVar(&opts.Labtool, "labtool", opts.Labtool, "the labtool binary (agnhost, pause, forwards)")
		f.DurationVar(&opts.Timeout, "timeout", opts.Timeout, "how long bringing the lab up may take")
	}

	up := &cobra.Command{Use: "up", Short: "Bring a lab up (2 clusters × 2 nodes by default)", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error { return labUp(c.Context(), opts) }}
	addUpFlags(up)
	daemon := &cobra.Command{Use: "daemon", Hidden: true, Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error { return labDaemon(opts) }}
	addUpFlags(daemon)

	cmd.AddCommand(up, daemon,
		&cobra.Command{Use: "down", Short: "Stop the lab and remove everything it created", Args: cobra.NoArgs,
			RunE: func(*cobra.Command, []string) error { return labDown(opts.StateDir, opts.Name) }},
		&cobra.Command{Use: "status", Short: "Show the lab's clusters, nodes and processes", Args: cobra.NoArgs,
			RunE: func(*cobra.Command, []string) error { return labStatus(opts.StateDir, opts.Name) }},
		kubeconfigCommand(&opts),
		envCommand(&opts),
		cableCommand(&opts, "unplug", false, "Pull a host's cable: its port on the lab's underlay switch goes down (a failed node or link)"),
		cableCommand(&opts, "plug", true, "Plug a host's cable back in (see unplug)"),
		captureCommand(&opts),
		execCommand(&opts),
		routerCommand(&opts),
		kubeletCommand(),
		&cobra.Command{Use: "container-init", Hidden: true, Args: cobra.NoArgs,
			RunE: func(*cobra.Command, []string) error { return kubelet.ContainerInit() }},
	)
	return cmd
}

func kubeconfigCommand(opts *lab.Options) *cobra.Command {
	var pathOnly bool
	c := &cobra.Command{Use: "kubeconfig", Short: "Print the lab's kubeconfig (one context per cluster: weft-1, weft-2, ...)", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			path := filepath.Join(opts.StateDir, lab.Kubeconfig)
			if _, err := os.Stat(filepath.Join(opts.StateDir, lab.ReadyFile)); err != nil {
				return errors.New("no lab is up (weftctl lab up)")
			}
			if pathOnly {
				fmt.Println(path)
				return nil
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			_, err = os.Stdout.Write(data)
			return err
		}}
	c.Flags().BoolVar(&pathOnly, "path", false, "print the file's path instead of its content")
	return c
}

func envCommand(opts *lab.Options) *cobra.Command {
	return &cobra.Command{Use: "env", Short: "Print shell lines that point kubectl and weftctl at the lab: eval \"$(weftctl lab env)\"",
		Long: `env prints two export lines: KUBECONFIG (the lab's, one context per cluster: weft-1,
weft-2, ...) and PATH with the lab's kubectl first (built for the version of the lab's API
servers, whatever kubectl the machine has) and weftctl's directory. Every page of the docs
assumes them:

  eval "$(bin/weftctl lab env)"
  kubectl --context weft-1 get nodes`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			r, err := lab.Open(opts.StateDir)
			if err != nil {
				return err
			}
			fmt.Printf("export KUBECONFIG=%s\n", shellQuote(r.Kubeconfig()))
			if opts.StateDir != filepath.Join(cacheDir(), "lab") {
				// Every later weftctl lab command in this shell means this lab.
				fmt.Printf("export WEFT_LAB_STATE=%s\n", shellQuote(opts.StateDir))
			}
			var dirs []string
			for _, d := range r.Path() {
				dirs = append(dirs, shellQuote(d))
			}
			fmt.Printf("export PATH=%s:\"$PATH\"\n", strings.Join(dirs, ":"))
			return nil
		}}
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+=:@%,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func cableCommand(opts *lab.Options, verb string, up bool, short string) *cobra.Command {
	return &cobra.Command{Use: verb + " HOST", Short: short,
		Long: short + `. HOST is a node (weft-2-node-1) or a cluster's control plane (weft-1-cp).
While unplugged the host keeps running but reaches nothing and nothing reaches it: what a
failed node, NIC or switch port looks like to the rest of the fabric. For example, a gateway
node unplugged while traffic crosses it:

  weftctl lab unplug weft-2-node-1   # peers' gateways stop hearing it; flows move within a second
  weftctl lab plug weft-2-node-1`,
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			r, err := lab.Open(opts.StateDir)
			if err != nil {
				return err
			}
			if err := r.SetCable(args[0], up); err != nil {
				return err
			}
			fmt.Printf("%s: %sged\n", args[0], verb)
			return nil
		}}
}

func captureCommand(opts *lab.Options) *cobra.Command {
	var copts lab.CaptureOptions
	c := &cobra.Command{Use: "capture [--host HOST] [--count N] [--seconds S] [--ascii] [-- FILTER...]",
		Short: "Show the packets crossing the lab's underlay switch (tcpdump on its ports), as a network tap would",
		Long: `capture runs tcpdump on the lab's underlay switch: every packet once, as it enters the
switch from a control plane or node (--host: one of them only), with an optional pcap filter
after --. It is how to see what travels between the lab's machines; for example what the
clusters' gateways send each other (WireGuard: nothing readable):

  weftctl lab capture --count 5 -- udp and src net 172.30.1.0/24 and dst net 172.30.2.0/24`,
		RunE: func(c *cobra.Command, args []string) error {
			r, err := lab.Open(opts.StateDir)
			if err != nil {
				return err
			}
			copts.Filter = args
			return r.Capture(c.Context(), copts, os.Stdout)
		}}
	var seconds float64
	f := c.Flags()
	f.StringVar(&copts.Host, "host", "", "capture on this host's port only (a node, or a cluster's control plane weft-1-cp)")
	f.IntVar(&copts.Count, "count", 0, "stop after this many packets")
	f.Float64Var(&seconds, "seconds", 0, "stop after this long")
	f.BoolVar(&copts.ASCII, "ascii", false, "print each packet's bytes as text (tcpdump -A)")
	c.PreRun = func(*cobra.Command, []string) { copts.Duration = time.Duration(seconds * float64(time.Second)) }
	return c
}

func execCommand(opts *lab.Options) *cobra.Command {
	return &cobra.Command{Use: "exec HOST -- COMMAND [ARGS...]",
		Short: "Run a command in a lab host's network namespace (node, control plane, router, external host)",
		Long: `exec runs COMMAND in the network namespace of HOST: a node (weft-2-node-1), a cluster's
control plane (weft-1-cp), or with routers its router (weft-2-router) and the external host
behind it (weft-2-ext). For example:

  weftctl lab exec weft-1-node-1 -- ip route show proto 0x57
  weftctl lab exec weft-2-ext -- ping -c 1 10.245.0.1`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			r, err := lab.Open(opts.StateDir)
			if err != nil {
				return err
			}
			return r.Exec(c.Context(), args[0], args[1:], os.Stdin, os.Stdout, os.Stderr)
		}}
}

func routerCommand(opts *lab.Options) *cobra.Command {
	return &cobra.Command{Use: "router CLUSTER -- COMMAND...",
		Short: "Run a command in the command line of a cluster's BGP router (birdc or vtysh)",
		Long: `router runs a command in the router of CLUSTER (a lab brought up with --router): BIRD's
birdc or FRR's vtysh, whichever the cluster has. For example:

  weftctl lab router weft-1 -- show protocols
  weftctl lab router weft-2 -- show bgp summary`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			r, err := lab.Open(opts.StateDir)
			if err != nil {
				return err
			}
			out, err := r.RouterCLI(c.Context(), args[0], strings.Join(args[1:], " "))
			fmt.Print(out)
			return err
		}}
}

// daemonPID returns the running lab daemon's PID, or 0.
func daemonPID(state string) int {
	data, err := os.ReadFile(filepath.Join(state, lab.PIDFile))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 1 {
		return 0
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), "lab\x00daemon") {
		return 0 // gone, or the PID was reused by something else
	}
	return pid
}

func labUp(ctx context.Context, opts lab.Options) error {
	if pid := daemonPID(opts.StateDir); pid != 0 {
		return fmt.Errorf("a lab is already up (daemon pid %d); run `weftctl lab down` first", pid)
	}
	if err := opts.Validate(); err != nil {
		return err
	}
	if names, _ := netlab.List(lab.NamespacePrefix(opts.Name)); len(names) > 0 {
		fmt.Printf("cleaning up after a lab that did not stop cleanly (%d namespaces)\n", len(names))
		if err := lab.Cleanup(opts.StateDir, lab.NamespacePrefix(opts.Name)); err != nil {
			return fmt.Errorf("cleaning up the previous lab: %w", err)
		}
	}
	if err := os.MkdirAll(opts.StateDir, 0o755); err != nil {
		return err
	}
	for _, f := range []string{lab.ReadyFile, lab.FailedFile} {
		_ = os.Remove(filepath.Join(opts.StateDir, f))
	}
	logf, err := os.OpenFile(filepath.Join(opts.StateDir, "daemon.log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	args := []string{"lab", "daemon", "--name", opts.Name, "--state", opts.StateDir, "--clusters", strconv.Itoa(opts.Clusters),
		"--nodes", strconv.Itoa(opts.Nodes), "--cni", opts.CNI, "--api-port", strconv.Itoa(opts.APIPortBase),
		"--kube-bin", opts.KubeBin, "--coredns", opts.CoreDNS, "--cni-bin", opts.CNIBin, "--weft-bin", opts.WeftBin,
		"--labtool", opts.Labtool, "--weft-manifests", opts.WeftManifests,
		"--timeout", opts.Timeout.String()}
	if len(opts.Datapaths) > 0 {
		args = append(args, "--datapath", strings.Join(opts.Datapaths, ","))
	}
	if opts.Overlap {
		args = append(args, "--overlap")
	}
	if len(opts.Routers) > 0 {
		args = append(args, "--router", strings.Join(opts.Routers, ","))
	}
	d := exec.Command(opts.Self, args...)
	d.Stdout, d.Stderr = logf, logf
	d.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	start := time.Now()
	if err := d.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- d.Wait() }()
	fmt.Printf("bringing up %d clusters × %d nodes (log: %s)\n", opts.Clusters, opts.Nodes, logf.Name())
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := os.Stat(filepath.Join(opts.StateDir, lab.ReadyFile)); err == nil {
			break
		}
		select {
		case err := <-exited:
			msg, _ := os.ReadFile(filepath.Join(opts.StateDir, lab.FailedFile))
			return fmt.Errorf("the lab failed to come up (%w): %s\nlast lines of %s:\n%s", err,
				strings.TrimSpace(string(msg)), logf.Name(), tail(logf.Name(), 15))
		case <-ctx.Done():
			_ = d.Process.Signal(syscall.SIGTERM)
			return ctx.Err()
		case <-tick.C:
		}
	}
	fmt.Printf("lab is up in %v\n\n", time.Since(start).Round(100*time.Millisecond))
	return labStatus(opts.StateDir, opts.Name)
}

func tail(path string, n int) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func labDaemon(opts lab.Options) error {
	if err := os.MkdirAll(opts.StateDir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(opts.StateDir, lab.PIDFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return err
	}
	data, _ := json.MarshalIndent(opts, "", "  ")
	_ = os.WriteFile(filepath.Join(opts.StateDir, lab.OptionsFile), data, 0o644)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	l, err := lab.New(opts, klog.Background())
	if err != nil {
		return err
	}
	return l.Run(ctx)
}

func labDown(state, name string) error {
	// The lab's own name, from its state, whatever --name says: the namespaces to remove
	// are named after it (another lab's must not be touched).
	if data, err := os.ReadFile(filepath.Join(state, lab.OptionsFile)); err == nil {
		var o lab.Options
		if json.Unmarshal(data, &o) == nil && o.Name != "" {
			name = o.Name
		}
	}
	if pid := daemonPID(state); pid != 0 {
		fmt.Printf("stopping the lab (daemon pid %d)\n", pid)
		_ = syscall.Kill(pid, syscall.SIGTERM)
		deadline := time.Now().Add(90 * time.Second)
		for daemonPID(state) != 0 && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if daemonPID(state) != 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if err := lab.Cleanup(state, lab.NamespacePrefix(name)); err != nil {
		return err
	}
	if left, _ := netlab.List(lab.NamespacePrefix(name)); len(left) > 0 {
		return fmt.Errorf("namespaces left behind: %v", left)
	}
	if err := lab.RemoveState(state); err != nil {
		return fmt.Errorf("removing the lab's state (logs stay in %s/logs): %w", state, err)
	}
	fmt.Println("lab is down")
	return nil
}

func labStatus(state, name string) error {
	pid := daemonPID(state)
	if pid == 0 {
		fmt.Println("no lab is running")
		return nil
	}
	if r, err := lab.Open(state); err == nil {
		name = r.Options.Name // the lab's own name, whatever --name says
	}
	var st lab.Status
	data, err := os.ReadFile(filepath.Join(state, lab.StatusFile))
	if err == nil {
		_ = json.Unmarshal(data, &st)
	}
	kubeconfig := filepath.Join(state, lab.Kubeconfig)
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "CLUSTER\tAPI\tPODS\tSERVICES\tNODES READY\tKUBE-SYSTEM PODS READY")
	for _, c := range st.Clusters {
		nodes, pods := clusterCounts(kubeconfig, c.Name)
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", c.Name, c.API, c.PodCIDR, c.ServiceCIDR, nodes, pods)
	}
	_ = w.Flush()
	down := 0
	for _, p := range st.Processes {
		if !p.Running {
			down++
			fmt.Printf("process %s is not running (restarts %d, last exit: %s)\n", p.Name, p.Restarts, p.LastExit)
		}
	}
	fmt.Printf("\n%d processes supervised by daemon pid %d, %d down\n", len(st.Processes), pid, down)
	rss, n := labMemory(lab.NamespacePrefix(name), pid)
	fmt.Printf("memory: %d MiB resident in %d processes (the lab's namespaces and its daemon)\n", rss/1024, n)
	env := "weftctl lab env"
	if state != labStateDir() {
		env = "weftctl lab --state " + shellQuote(state) + " env"
	}
	fmt.Printf("\neval \"$(%s)\"   # the lab's KUBECONFIG, and its kubectl first on PATH\nkubectl --context weft-1 get nodes -o wide\n", env)
	return nil
}

func clusterCounts(kubeconfig, context string) (string, string) {
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		&clientcmd.ClientConfigLoadingRules{ExplicitPath: kubeconfig}, &clientcmd.ConfigOverrides{CurrentContext: context}).ClientConfig()
	if err != nil {
		return "?", "?"
	}
	cfg.Timeout = 5 * time.Second
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return "?", "?"
	}
	ctx := context0()
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return "unreachable", "?"
	}
	ready := 0
	for _, n := range nodes.Items {
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				ready++
			}
		}
	}
	pods, err := cs.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Sprintf("%d/%d", ready, len(nodes.Items)), "?"
	}
	podsReady := 0
	for _, p := range pods.Items {
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				podsReady++
			}
		}
	}
	return fmt.Sprintf("%d/%d", ready, len(nodes.Items)), fmt.Sprintf("%d/%d", podsReady, len(pods.Items))
}

func context0() context.Context { return context.Background() }

func kubeletCommand() *cobra.Command {
	var cfg kubelet.Config
	c := &cobra.Command{Use: "kubelet", Hidden: true, Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return kubelet.Run(ctx, cfg)
		}}
	f := c.Flags()
	f.StringVar(&cfg.NodeName, "node-name", "", "")
	f.StringVar(&cfg.NodeIP, "node-ip", "", "")
	f.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "")
	f.StringVar(&cfg.Root, "root", "", "")
	f.StringVar(&cfg.BPFFS, "bpffs", "", "where the hostPath /sys/fs/bpf leads (the lab's bpffs)")
	f.StringVar(&cfg.State, "state", "", "")
	f.StringVar(&cfg.CNIBinDir, "cni-bin-dir", "", "")
	f.StringVar(&cfg.ServingCert, "serving-cert", "", "")
	f.StringVar(&cfg.ServingKey, "serving-key", "", "")
	f.StringVar(&cfg.ClientCA, "client-ca", "", "")
	f.StringVar(&cfg.ClusterDNS, "cluster-dns", "", "")
	f.StringVar(&cfg.ClusterDomain, "cluster-domain", "cluster.local", "")
	f.StringVar(&cfg.ImageDir, "image-dir", "", "")
	f.StringVar(&cfg.WeftBin, "weft-bin", "", "")
	f.StringVar(&cfg.CoreDNS, "coredns", "", "")
	f.StringVar(&cfg.Multicall, "multicall", "", "")
	f.StringVar(&cfg.CreatedPaths, "created-paths", "", "")
	f.IntVar(&cfg.Port, "port", 10250, "")
	f.StringVar(&cfg.NetnsPrefix, "netns-prefix", "", "")
	f.StringVar(&cfg.HostMountNS, "host-mount-ns", "", "")
	f.StringToStringVar(&cfg.Labels, "node-labels", nil, "")
	return c
}

// labMemory sums the resident memory (KiB) of every process in the lab's namespaces and of
// its daemon.
func labMemory(prefix string, daemon int) (int64, int) {
	names, _ := netlab.List(prefix)
	inodes := map[uint64]bool{}
	for _, n := range names {
		if ino, err := netlab.Inode(netlab.Path(n)); err == nil {
			inodes[ino] = true
		}
	}
	pids := append(netlab.PIDsIn(inodes), daemon)
	var total int64
	for _, pid := range pids {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
				total += kb
			}
		}
	}
	return total, len(pids)
}
