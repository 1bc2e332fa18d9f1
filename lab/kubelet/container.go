package kubelet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// containerRunner runs one container's process, restarting it per the pod's policy.
type containerRunner struct {
	pr     *podRunner
	spec   *corev1.Container
	isInit bool
	logDir string

	mu        sync.Mutex
	cmd       *exec.Cmd
	env       []string
	dir       string
	restarts  int
	state     corev1.ContainerState
	lastState corev1.ContainerState
	ready     bool
	started   bool
	stopping  bool
	exited    chan struct{}
}

func newContainerRunner(pr *podRunner, spec *corev1.Container, isInit bool) *containerRunner {
	return &containerRunner{pr: pr, spec: spec, isInit: isInit,
		logDir: filepath.Join(pr.dir, "logs", spec.Name),
		state:  corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}}
}

func (c *containerRunner) setState(s corev1.ContainerState) {
	c.mu.Lock()
	c.state = s
	c.mu.Unlock()
	c.pr.changed()
}

func (c *containerRunner) waiting(reason, msg string) {
	c.setState(corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}})
}

// status renders the container's status; netErr explains a pod stuck before its containers.
func (c *containerRunner) status(netErr string) corev1.ContainerStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := corev1.ContainerStatus{
		Name: c.spec.Name, Image: c.spec.Image, ImageID: "lab://" + c.spec.Image,
		RestartCount: int32(c.restarts), State: *c.state.DeepCopy(), LastTerminationState: *c.lastState.DeepCopy(),
		Ready: c.ready, Started: &c.started,
	}
	if c.cmd != nil && c.cmd.Process != nil {
		st.ContainerID = "lab://" + strconv.Itoa(c.cmd.Process.Pid)
	}
	if w := st.State.Waiting; w != nil && w.Reason == "ContainerCreating" && netErr != "" {
		w.Message = netErr
	}
	return st
}

func (c *containerRunner) pid() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil || c.cmd.Process == nil || c.state.Running == nil {
		return 0
	}
	return c.cmd.Process.Pid
}

// prepared is everything a start needs; errors carry the waiting reason to report.
type startError struct {
	reason string
	err    error
}

func (e *startError) Error() string { return e.err.Error() }

func (c *containerRunner) prepare() (*InitSpec, error) {
	pr, p := c.pr, c.pr.p
	im, err := p.images.Resolve(c.spec.Image)
	if err != nil {
		reason := "ErrImagePull"
		c.mu.Lock()
		if c.state.Waiting != nil && (c.state.Waiting.Reason == "ErrImagePull" || c.state.Waiting.Reason == "ImagePullBackOff") {
			reason = "ImagePullBackOff"
		}
		c.mu.Unlock()
		return nil, &startError{reason, err}
	}
	pr.mu.Lock()
	ips := pr.ips
	pr.mu.Unlock()
	vars, err := p.envSources(pr.pod, ips).containerEnv(c.spec)
	if err != nil {
		return nil, &startError{"CreateContainerConfigError", err}
	}
	lookup := func(name string) (string, bool) {
		for _, v := range vars {
			if v.name == name {
				return v.value, true
			}
		}
		return "", false
	}
	var cmd, args []string
	for _, s := range c.spec.Command {
		cmd = append(cmd, Expand(s, lookup))
	}
	for _, s := range c.spec.Args {
		args = append(args, Expand(s, lookup))
	}
	argv, err := im.Command(cmd, args)
	if err != nil {
		return nil, &startError{"RunContainerError", err}
	}
	env := []string{"PATH=" + im.PATH(), "HOSTNAME=" + pr.pod.Name, "HOME=/root"}
	for _, v := range vars {
		env = setEnv(env, v.name, v.value)
	}
	spec := &InitSpec{Argv: argv, Env: env, Dir: c.spec.WorkingDir}
	if !pr.hostNetwork() {
		spec.Netns, spec.Hostname = netnsPathOf(pr), pr.pod.Name
	}
	mounts, err := c.mounts()
	if err != nil {
		return nil, &startError{"CreateContainerConfigError", err}
	}
	spec.Mounts = mounts
	return spec, nil
}

func setEnv(env []string, name, value string) []string {
	for i, kv := range env {
		if strings.HasPrefix(kv, name+"=") {
			env[i] = name + "=" + value
			return env
		}
	}
	return append(env, name+"="+value)
}

func netnsPathOf(pr *podRunner) string {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if pr.netns == "" {
		return ""
	}
	return "/run/netns/" + pr.netns
}

func (c *containerRunner) mounts() ([]Mount, error) {
	pr := c.pr
	mounts := []Mount{
		{Source: filepath.Join(pr.dir, "etc-hosts"), Target: "/etc/hosts"},
		{Source: filepath.Join(pr.dir, "resolv.conf"), Target: "/etc/resolv.conf"},
	}
	for _, vm := range c.spec.VolumeMounts {
		src, ok := pr.vols.paths[vm.Name]
		if !ok {
			return nil, fmt.Errorf("volumeMount %s: no volume of that name", vm.Name)
		}
		if vm.SubPath != "" {
			src = filepath.Join(src, vm.SubPath)
			if _, err := os.Stat(src); os.IsNotExist(err) {
				if err := os.MkdirAll(src, 0o755); err != nil {
					return nil, err
				}
			}
		}
		mounts = append(mounts, Mount{Source: src, Target: vm.MountPath, ReadOnly: vm.ReadOnly})
	}
	for _, m := range mounts {
		created, err := ensureMountPoint(m.Source, m.Target)
		if err != nil {
			return nil, fmt.Errorf("mount point %s: %w", m.Target, err)
		}
		if created != "" {
			pr.p.recordCreated(created)
		}
	}
	return mounts, nil
}

// start launches one instance of the container through the container-init helper. It holds
// the container's lock from the stopping check to the launch, so stop either prevents the
// start or sees the process and ends it.
func (c *containerRunner) start(ctx context.Context, spec *InitSpec) error {
	if err := os.MkdirAll(c.logDir, 0o755); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopping || ctx.Err() != nil {
		return errStopping
	}
	logf, err := os.OpenFile(filepath.Join(c.logDir, strconv.Itoa(c.restarts)+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	data, _ := json.Marshal(spec)
	cmd := exec.Command(c.pr.p.self, "lab", "container-init")
	cmd.Env = []string{InitEnv + "=" + string(data)}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	c.pr.p.recordPID(c.pr, cmd.Process.Pid)
	c.cmd, c.env, c.dir = cmd, spec.Env, spec.Dir
	c.exited = make(chan struct{})
	c.started = c.spec.StartupProbe == nil
	c.ready = false
	c.state = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}}
	go c.pr.changed()
	return nil
}

var errStopping = errors.New("the pod is stopping")

// wait waits for the current instance and records how it ended.
func (c *containerRunner) wait() int32 {
	c.mu.Lock()
	cmd, exited := c.cmd, c.exited
	started := c.state.Running
	c.mu.Unlock()
	err := cmd.Wait()
	close(exited)
	code := int32(0)
	reason := "Completed"
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int32(ws.Signal())
		} else {
			code = int32(ee.ExitCode())
		}
	} else if err != nil {
		code = 128
	}
	msg := ""
	if code != 0 {
		reason = "Error"
		msg = c.logTail()
	}
	term := &corev1.ContainerStateTerminated{ExitCode: code, Reason: reason, Message: msg, FinishedAt: metav1.Now(),
		ContainerID: "lab://" + strconv.Itoa(cmd.Process.Pid)}
	if started != nil {
		term.StartedAt = started.StartedAt
	}
	c.mu.Lock()
	c.state = corev1.ContainerState{Terminated: term}
	c.ready = false
	c.mu.Unlock()
	c.pr.changed()
	return code
}

// logTail returns the end of the current log (up to 80 lines or 2 KiB), so a crash's cause
// shows in the pod status.
func (c *containerRunner) logTail() string {
	c.mu.Lock()
	n := c.restarts
	c.mu.Unlock()
	data, _ := os.ReadFile(filepath.Join(c.logDir, strconv.Itoa(n)+".log"))
	if len(data) > 2048 {
		data = data[len(data)-2048:]
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > 80 {
		lines = lines[len(lines)-80:]
	}
	return strings.Join(lines, "\n")
}

// supervise runs the container until the pod stops, restarting per restartPolicy.
func (c *containerRunner) supervise(ctx context.Context) {
	backoff := time.Second
	for {
		spec, err := c.prepare()
		if err == nil {
			err = c.start(ctx, spec)
		}
		if errors.Is(err, errStopping) {
			return
		}
		if err != nil {
			reason := "RunContainerError"
			var se *startError
			if errors.As(err, &se) {
				reason = se.reason
			}
			c.waiting(reason, err.Error())
			c.pr.event(corev1.EventTypeWarning, "Failed", "container %s: %s: %v", c.spec.Name, reason, err)
			if !sleepCtx(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, 30*time.Second)
			continue
		}
		c.pr.event(corev1.EventTypeNormal, "Started", "Started container %s", c.spec.Name)
		startedAt := time.Now()
		probeCtx, stopProbes := context.WithCancel(ctx)
		go c.probe(probeCtx)
		code := c.wait()
		stopProbes()
		if c.isStopping() || ctx.Err() != nil {
			return
		}
		policy := c.pr.pod.Spec.RestartPolicy
		if policy == corev1.RestartPolicyNever || policy == corev1.RestartPolicyOnFailure && code == 0 {
			return
		}
		if time.Since(startedAt) > 10*time.Minute {
			backoff = time.Second
		}
		c.mu.Lock()
		c.lastState, c.restarts = c.state, c.restarts+1
		c.state = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff",
			Message: fmt.Sprintf("back-off %v restarting failed container=%s pod=%s_%s", backoff, c.spec.Name, c.pr.pod.Name, c.pr.pod.Namespace)}}
		c.mu.Unlock()
		c.pr.changed()
		c.pr.event(corev1.EventTypeWarning, "BackOff", "Back-off restarting failed container %s (exit code %d)", c.spec.Name, code)
		if !sleepCtx(ctx, backoff) {
			return
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

// runToCompletion runs an init container until it exits 0; false means the pod cannot go on.
func (c *containerRunner) runToCompletion(ctx context.Context) bool {
	backoff := time.Second
	for {
		spec, err := c.prepare()
		if err == nil {
			err = c.start(ctx, spec)
		}
		if errors.Is(err, errStopping) {
			return false
		}
		if err == nil {
			if c.wait() == 0 {
				return true
			}
			if c.isStopping() || c.pr.pod.Spec.RestartPolicy == corev1.RestartPolicyNever {
				return false
			}
			c.mu.Lock()
			c.lastState, c.restarts = c.state, c.restarts+1
			c.mu.Unlock()
		} else {
			reason := "RunContainerError"
			var se *startError
			if errors.As(err, &se) {
				reason = se.reason
			}
			c.waiting(reason, err.Error())
		}
		if !sleepCtx(ctx, backoff) {
			return false
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

func (c *containerRunner) isStopping() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopping
}

// stop ends the container: SIGTERM to its process group, SIGKILL after grace.
func (c *containerRunner) stop(grace time.Duration) {
	c.mu.Lock()
	c.stopping = true
	cmd, exited, running := c.cmd, c.exited, c.state.Running != nil
	c.mu.Unlock()
	if cmd == nil || cmd.Process == nil || !running {
		return
	}
	pgid := cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(grace):
	}
	// Kill whatever is left in the group (children of the main process too).
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	<-exited
}

// kill restarts a container whose liveness probe failed.
func (c *containerRunner) kill() {
	c.mu.Lock()
	cmd := c.cmd
	c.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}

// outputOf runs a command inside the container and returns its combined output.
func (c *containerRunner) outputOf(ctx context.Context, argv []string) ([]byte, error) {
	cmd, err := c.enter(ctx, argv)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	return out.Bytes(), err
}

// enter builds a command that runs inside the running container's namespaces.
func (c *containerRunner) enter(ctx context.Context, argv []string) (*exec.Cmd, error) {
	pid := c.pid()
	if pid == 0 {
		return nil, fmt.Errorf("container %s: %w", c.spec.Name, errNotRunning)
	}
	c.mu.Lock()
	env, dir := c.env, c.dir
	c.mu.Unlock()
	if dir == "" {
		dir = "/"
	}
	args := []string{"-t", strconv.Itoa(pid), "-m", "-u", "-n", "--wd=" + dir, "--"}
	cmd := exec.CommandContext(ctx, "nsenter", append(args, argv...)...)
	cmd.Env = env
	return cmd, nil
}
