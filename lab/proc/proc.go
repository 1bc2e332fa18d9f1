// Package proc runs and supervises the lab's long-running processes (etcd, API servers,
// kubelets, ...), each optionally inside a named network namespace, with its output in a log
// file. A process that exits unexpectedly is restarted with backoff; every process gets
// SIGKILL if the supervisor dies (PR_SET_PDEATHSIG), so a killed lab leaves no orphans
// behind its direct children. Stop sends SIGTERM to the process group, then SIGKILL.
package proc

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/weft-net/weft/lab/netlab"
)

// Spec describes one process.
type Spec struct {
	Name    string
	Netns   string // named network namespace; empty means the supervisor's own
	Path    string
	Args    []string
	Env     []string // added to the supervisor's environment
	LogPath string
	// Restart restarts the process with backoff when it exits.
	Restart bool
	// OwnMounts starts the process in a new mount namespace that is a slave of the
	// supervisor's: mounts made outside propagate in, its own mounts stay inside.
	OwnMounts bool
	// ExtraFiles become fd 3, 4, ... in the process.
	ExtraFiles []*os.File
}

// Status is a process's current state.
type Status struct {
	Name     string
	PID      int
	Running  bool
	Restarts int
	LastExit string
}

// Supervisor owns a set of named processes.
type Supervisor struct {
	mu    sync.Mutex
	procs map[string]*proc
	order []string
}

type proc struct {
	spec     Spec
	mu       sync.Mutex
	cmd      *exec.Cmd
	running  bool
	restarts int
	lastExit string
	stopping bool
	done     chan struct{}
}

// New returns an empty supervisor.
func New() *Supervisor { return &Supervisor{procs: map[string]*proc{}} }

// Start starts a process and keeps it running (if Restart) until Stop. It fails if the
// binary is missing or the first start fails.
func (s *Supervisor) Start(spec Spec) error {
	if _, err := os.Stat(spec.Path); err != nil {
		return fmt.Errorf("%s: binary %s: %w", spec.Name, spec.Path, err)
	}
	s.mu.Lock()
	if _, dup := s.procs[spec.Name]; dup {
		s.mu.Unlock()
		return fmt.Errorf("process %s already started", spec.Name)
	}
	p := &proc{spec: spec, done: make(chan struct{})}
	s.procs[spec.Name] = p
	s.order = append(s.order, spec.Name)
	s.mu.Unlock()

	cmd, err := p.start()
	if err != nil {
		close(p.done)
		return err
	}
	go p.supervise(cmd)
	return nil
}

func (p *proc) start() (*exec.Cmd, error) {
	path, args := p.spec.Path, p.spec.Args
	if p.spec.OwnMounts {
		args = append([]string{"--mount", "--propagation", "slave", "--", path}, args...)
		path = "unshare"
	}
	if p.spec.Netns != "" {
		args = append([]string{"--net=" + netlab.Path(p.spec.Netns), "--", path}, args...)
		path = "nsenter"
	}
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), p.spec.Env...)
	cmd.ExtraFiles = p.spec.ExtraFiles
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if p.spec.LogPath != "" {
		f, err := os.OpenFile(p.spec.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		fmt.Fprintf(f, "--- %s starting %s %v\n", time.Now().Format(time.RFC3339), p.spec.Path, p.spec.Args)
		cmd.Stdout, cmd.Stderr = f, f
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", p.spec.Name, err)
	}
	p.mu.Lock()
	p.cmd, p.running = cmd, true
	p.mu.Unlock()
	return cmd, nil
}

func (p *proc) supervise(cmd *exec.Cmd) {
	defer close(p.done)
	backoff := time.Second
	for {
		started := time.Now()
		err := cmd.Wait()
		p.mu.Lock()
		p.running = false
		p.lastExit = exitString(err)
		stopping := p.stopping
		p.mu.Unlock()
		if stopping || !p.spec.Restart {
			return
		}
		if time.Since(started) > time.Minute {
			backoff = time.Second
		}
		time.Sleep(backoff)
		backoff = min(backoff*2, 30*time.Second)
		p.mu.Lock()
		if p.stopping {
			p.mu.Unlock()
			return
		}
		p.restarts++
		p.mu.Unlock()
		next, err := p.start()
		if err != nil {
			p.mu.Lock()
			p.lastExit = "restart failed: " + err.Error()
			p.mu.Unlock()
			continue
		}
		cmd = next
	}
}

func exitString(err error) string {
	if err == nil {
		return "exit 0"
	}
	return err.Error()
}

// Stop stops one process: SIGTERM to its process group, SIGKILL after timeout.
func (s *Supervisor) Stop(name string, timeout time.Duration) error {
	s.mu.Lock()
	p, ok := s.procs[name]
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("no process %s", name)
	}
	p.stop(timeout)
	s.mu.Lock()
	delete(s.procs, name)
	s.order = slices.DeleteFunc(s.order, func(n string) bool { return n == name })
	s.mu.Unlock()
	return nil
}

// Kill sends SIGKILL to a process's group without stopping supervision: a process with
// Restart comes back (tests use it to simulate a crash).
func (s *Supervisor) Kill(name string) error {
	s.mu.Lock()
	p, ok := s.procs[name]
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("no process %s", name)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return errors.New("not running")
	}
	return syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
}

func (p *proc) stop(timeout time.Duration) {
	p.mu.Lock()
	p.stopping = true
	cmd := p.cmd
	p.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	}
	select {
	case <-p.done:
	case <-time.After(timeout):
		if cmd != nil && cmd.Process != nil {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
		<-p.done
	}
}

// StopAll stops every process, the last started first.
func (s *Supervisor) StopAll(timeout time.Duration) {
	s.mu.Lock()
	names := slices.Clone(s.order)
	s.mu.Unlock()
	slices.Reverse(names)
	for _, n := range names {
		_ = s.Stop(n, timeout)
	}
}

// Status reports every process in start order.
func (s *Supervisor) Status() []Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Status, 0, len(s.order))
	for _, n := range s.order {
		p := s.procs[n]
		p.mu.Lock()
		st := Status{Name: n, Restarts: p.restarts, LastExit: p.lastExit}
		if p.running {
			st.PID, st.Running = p.cmd.Process.Pid, true
		}
		p.mu.Unlock()
		out = append(out, st)
	}
	return out
}
