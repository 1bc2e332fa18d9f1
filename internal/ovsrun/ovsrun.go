// Package ovsrun runs one Open vSwitch instance (ovsdb-server and ovs-vswitchd) with its own
// run, database and log directories, optionally inside a network namespace. It is what the
// weft-ovs container runs on every node, and what datapath tests run per simulated node.
// Several instances coexist on one machine (one per lab node).
package ovsrun

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Schema is where Debian's openvswitch-common installs the database schema.
const Schema = "/usr/share/openvswitch/vswitch.ovsschema"

// Options place one instance.
type Options struct {
	RunDir, DBDir, LogDir string
	// Netns, when set, is a network namespace path both daemons run in.
	Netns string
	// UserspaceTSO enables TCP segmentation offload in the userspace datapath (veth ports
	// on a netdev bridge drop TCP without it).
	UserspaceTSO bool
	// PacketSocketBuffer, when positive, is the buffer size (bytes) kept on ovs-vswitchd's
	// AF_PACKET sockets while it runs (see DefaultPacketSocketBuffer); the kernel's
	// default otherwise.
	PacketSocketBuffer int
}

// Instance is a running Open vSwitch.
type Instance struct {
	opts     Options
	db, vsd  *exec.Cmd
	waitDone chan struct{}
	watched  bool // a goroutine waits for the daemons
}

// DBSocket is the OVSDB endpoint of the instance.
func (o Options) DBSocket() string { return "unix:" + filepath.Join(o.RunDir, "db.sock") }

func (o Options) env() []string {
	return append(os.Environ(), "OVS_RUNDIR="+o.RunDir, "OVS_DBDIR="+o.DBDir, "OVS_LOGDIR="+o.LogDir)
}

func (o Options) command(name string, args ...string) *exec.Cmd {
	if o.Netns != "" {
		args = append([]string{"--net=" + o.Netns, "--", name}, args...)
		name = "nsenter"
	}
	cmd := exec.Command(name, args...)
	cmd.Env = o.env()
	return cmd
}

// Start creates the database if needed and starts both daemons as children; it returns once
// ovs-vswitchd has connected to the database.
func Start(ctx context.Context, o Options) (*Instance, error) {
	for _, d := range []string{o.RunDir, o.DBDir, o.LogDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	db := filepath.Join(o.DBDir, "conf.db")
	if _, err := os.Stat(db); os.IsNotExist(err) {
		if out, err := exec.Command("ovsdb-tool", "create", db, Schema).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ovsdb-tool create: %w: %s", err, out)
		}
	}
	// Sockets and pid files of an instance that died must not be mistaken for this one's.
	for _, f := range []string{"db.sock", "ovsdb-server.ctl", "ovs-vswitchd.ctl", "ovsdb-server.pid", "ovs-vswitchd.pid"} {
		_ = os.Remove(filepath.Join(o.RunDir, f))
	}
	in := &Instance{opts: o, waitDone: make(chan struct{})}
	in.db = o.command("ovsdb-server", db, "--remote=punix:"+filepath.Join(o.RunDir, "db.sock"),
		"--pidfile="+filepath.Join(o.RunDir, "ovsdb-server.pid"), "--unixctl="+filepath.Join(o.RunDir, "ovsdb-server.ctl"),
		"--log-file="+filepath.Join(o.LogDir, "ovsdb-server.log"))
	// Each daemon has its own process group: a signal to weft-ovs's group (Ctrl-C, a
	// runtime that signals the whole container) reaches weft-ovs alone, which may still
	// need the database (to give the uplink back) before it stops them. They still die
	// with it (Pdeathsig).
	in.db.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
	if err := in.db.Start(); err != nil {
		return nil, fmt.Errorf("ovsdb-server: %w", err)
	}
	sock := filepath.Join(o.RunDir, "db.sock")
	if err := waitFor(ctx, func() bool {
		return exec.Command("ovsdb-client", "--timeout=1", "list-dbs", "unix:"+sock).Run() == nil
	}); err != nil {
		in.Stop()
		return nil, fmt.Errorf("ovsdb-server did not create %s (log %s/ovsdb-server.log)", sock, o.LogDir)
	}
	tso := "false"
	if o.UserspaceTSO {
		tso = "true"
	}
	vsctl := exec.Command("ovs-vsctl", "--db="+o.DBSocket(), "--no-wait", "init", "--",
		"set", "Open_vSwitch", ".", "other_config:userspace-tso-enable="+tso)
	if out, err := vsctl.CombinedOutput(); err != nil {
		in.Stop()
		return nil, fmt.Errorf("ovs-vsctl init: %w: %s", err, out)
	}
	in.vsd = o.command("ovs-vswitchd", o.DBSocket(), "--pidfile="+filepath.Join(o.RunDir, "ovs-vswitchd.pid"),
		"--unixctl="+filepath.Join(o.RunDir, "ovs-vswitchd.ctl"), "--log-file="+filepath.Join(o.LogDir, "ovs-vswitchd.log"))
	in.vsd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
	if err := in.vsd.Start(); err != nil {
		in.Stop()
		return nil, fmt.Errorf("ovs-vswitchd: %w", err)
	}
	if err := waitFor(ctx, func() bool {
		return exec.Command("ovs-vsctl", "--db="+o.DBSocket(), "--timeout=1", "get", "Open_vSwitch", ".", "cur_cfg").Run() == nil &&
			fileExists(filepath.Join(o.RunDir, "ovs-vswitchd.ctl"))
	}); err != nil {
		in.Stop()
		return nil, fmt.Errorf("ovs-vswitchd did not start (log %s/ovs-vswitchd.log)", o.LogDir)
	}
	in.watched = true
	go func() {
		_ = in.vsd.Wait()
		_ = in.db.Wait()
		close(in.waitDone)
	}()
	if o.PacketSocketBuffer > 0 {
		go in.growPacketSocketsLoop(ctx, o.PacketSocketBuffer, 500*time.Millisecond)
	}
	return in, nil
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func waitFor(ctx context.Context, ok func() bool) error {
	deadline := time.Now().Add(15 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// Wait blocks until both daemons have exited.
func (in *Instance) Wait() { <-in.waitDone }

// OwnsDatabase says whether the node's database is still this instance's: the ovsdb-server
// pid file names this instance's ovsdb-server. Another instance started on the same node
// (a new pod while this one terminates) replaces the pid file, and then the database — and
// the uplink it records — is that instance's business, not this one's.
func (in *Instance) OwnsDatabase() bool {
	data, err := os.ReadFile(filepath.Join(in.opts.RunDir, "ovsdb-server.pid"))
	if err != nil || in.db == nil || in.db.Process == nil {
		return false
	}
	return strings.TrimSpace(string(data)) == strconv.Itoa(in.db.Process.Pid)
}

// Kill kills both daemons (SIGKILL: as a container runtime does when a container dies) and
// waits for them; they clean nothing up.
func (in *Instance) Kill() {
	for _, c := range []*exec.Cmd{in.vsd, in.db} {
		if c != nil && c.Process != nil {
			_ = c.Process.Kill()
		}
	}
	if in.watched {
		<-in.waitDone
		return
	}
	for _, c := range []*exec.Cmd{in.vsd, in.db} {
		if c != nil && c.Process != nil {
			_ = c.Wait()
		}
	}
}

// Stop terminates both daemons (ovs-vswitchd first) and waits for them; SIGKILL after 5 s.
func (in *Instance) Stop() {
	for _, c := range []*exec.Cmd{in.vsd, in.db} {
		if c != nil && c.Process != nil {
			_ = c.Process.Signal(syscall.SIGTERM)
		}
	}
	if !in.watched {
		for _, c := range []*exec.Cmd{in.vsd, in.db} {
			if c != nil && c.Process != nil {
				_ = c.Wait()
			}
		}
		return
	}
	select {
	case <-in.waitDone:
	case <-time.After(5 * time.Second):
		for _, c := range []*exec.Cmd{in.vsd, in.db} {
			if c != nil && c.Process != nil {
				_ = c.Process.Kill()
			}
		}
		<-in.waitDone
	}
}
