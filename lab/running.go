package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/weft-net/weft/lab/netlab"
)

// Running is a lab that is up, as its state directory describes it: the options it was
// brought up with and its layout. Commands that act on a running lab (plug, unplug, env)
// start from it.
type Running struct {
	Options Options
	Layout  *Layout
}

// Open reads the lab whose state directory is stateDir.
func Open(stateDir string) (*Running, error) {
	if _, err := os.Stat(filepath.Join(stateDir, ReadyFile)); err != nil {
		return nil, fmt.Errorf("no lab is up in %s (weftctl lab up)", stateDir)
	}
	data, err := os.ReadFile(filepath.Join(stateDir, OptionsFile))
	if err != nil {
		return nil, fmt.Errorf("the lab in %s: %w", stateDir, err)
	}
	var opts Options
	if err := json.Unmarshal(data, &opts); err != nil {
		return nil, fmt.Errorf("the lab in %s: %s: %w", stateDir, OptionsFile, err)
	}
	layout, err := NewLayout(opts.Name, opts.StateDir, opts.Clusters, opts.Nodes, opts.APIPortBase)
	if err != nil {
		return nil, err
	}
	if opts.Overlap {
		layout.OverlapLast()
	}
	return &Running{Options: opts, Layout: layout}, nil
}

// Host finds a node, control plane, router or external host by name ("weft-2-node-1",
// "weft-1-cp", "weft-2-router", "weft-2-ext"); the error lists the names the lab has.
func (r *Running) Host(name string) (Host, error) {
	var names []string
	for _, c := range r.Layout.Clusters {
		hosts := append([]Host{c.ControlPlane}, c.Nodes...)
		if r.Options.Router(c.Index) != "" {
			hosts = append(hosts, c.RouterHost(r.Layout.Prefix), c.ExternalHost(r.Layout.Prefix))
		}
		for _, h := range hosts {
			if h.Name == name {
				return h, nil
			}
			names = append(names, h.Name)
		}
	}
	sort.Strings(names)
	return Host{}, fmt.Errorf("the lab has no host %q; it has %s", name, strings.Join(names, ", "))
}

// SetCable plugs a host's cable into the underlay switch (up) or pulls it (down): its port
// on the switch goes up or down, as a cable pulled from a switch does. The host keeps
// running; everything it had in flight is lost.
func (r *Running) SetCable(name string, up bool) error {
	h, err := r.Host(name)
	if err != nil {
		return err
	}
	state := "down"
	if up {
		state = "up"
	}
	return netlab.IP("-n", r.Layout.Underlay, "link", "set", h.Port, state)
}

// Kubeconfig is the lab's kubeconfig: one context per cluster (weft-1, weft-2, ...).
func (r *Running) Kubeconfig() string { return filepath.Join(r.Options.StateDir, Kubeconfig) }

// Path is what a shell puts first on PATH to use the lab as the docs do: the lab's kubectl
// (the version of its API servers, whatever kubectl the machine has) and weft's binaries.
func (r *Running) Path() []string {
	dirs := []string{r.Options.KubeBin}
	if r.Options.WeftBin != "" && r.Options.WeftBin != r.Options.KubeBin {
		dirs = append(dirs, r.Options.WeftBin)
	}
	return dirs
}

// CaptureOptions say what Capture shows.
type CaptureOptions struct {
	// Host limits the capture to one host's port on the switch ("" for every port).
	Host string
	// Count stops after that many packets (0: no limit); Duration after that long (0: none).
	Count    int
	Duration time.Duration
	// ASCII prints each packet's bytes as text too (tcpdump -A).
	ASCII bool
	// Filter is a tcpdump (pcap) filter expression.
	Filter []string
}

// Capture prints the packets crossing the lab's underlay switch, as tcpdump reads them on
// the switch's ports (each packet once, as it enters the switch): what a network tap
// between the lab's machines would see.
func (r *Running) Capture(ctx context.Context, opts CaptureOptions, out io.Writer) error {
	tcpdump, err := exec.LookPath("tcpdump")
	if err != nil {
		return fmt.Errorf("no tcpdump (hack/lab-deps.sh installs it): %w", err)
	}
	iface := "any"
	if opts.Host != "" {
		h, err := r.Host(opts.Host)
		if err != nil {
			return err
		}
		iface = h.Port
	}
	args := []string{"netns", "exec", r.Layout.Underlay, tcpdump, "-i", iface, "-Q", "in", "-n", "-l", "--immediate-mode"}
	if opts.Count > 0 {
		args = append(args, "-c", strconv.Itoa(opts.Count))
	}
	if opts.ASCII {
		args = append(args, "-A")
	}
	args = append(args, opts.Filter...)
	if opts.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.Duration)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.Stdout, cmd.Stderr = out, io.Discard
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) } // tcpdump flushes on SIGINT
	err = cmd.Run()
	if ctx.Err() != nil {
		return nil // the time was up
	}
	return err
}

// Exec runs argv in a host's network namespace (see Host), with the lab's files where the
// host's programs expect them: the command sees the host's network only.
func (r *Running) Exec(ctx context.Context, name string, argv []string, stdin io.Reader, stdout, stderr io.Writer) error {
	h, err := r.Host(name)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.Netns}, argv...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	return cmd.Run()
}

// RouterCLI runs a command in the command line of a cluster's router (birdc or vtysh).
func (r *Running) RouterCLI(ctx context.Context, cluster, command string) (string, error) {
	for _, c := range r.Layout.Clusters {
		if c.Name != cluster {
			continue
		}
		kind := r.Options.Router(c.Index)
		if kind == "" {
			return "", fmt.Errorf("cluster %s has no router (weftctl lab up --router bird,frr)", cluster)
		}
		return c.RouterConfig(r.Layout.Prefix, kind).CLI(ctx, command)
	}
	return "", fmt.Errorf("the lab has no cluster %q", cluster)
}
