package kubelet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/creack/pty"
	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	utilexec "k8s.io/utils/exec"
)

func (r *podRunner) container(name string) (*containerRunner, error) {
	all := append(append([]*containerRunner{}, r.containers...), r.init...)
	if name == "" && len(r.containers) == 1 {
		return r.containers[0], nil
	}
	var names []string
	for _, c := range all {
		if c.spec.Name == name {
			return c, nil
		}
		names = append(names, c.spec.Name)
	}
	return nil, errdefs.NotFoundf("container %q not found in pod %s (containers: %s)", name, r.pod.Name, strings.Join(names, ", "))
}

// exec runs a command in a container for `kubectl exec`, with a TTY when asked. A non-zero
// exit reaches kubectl as its exit code.
func (r *podRunner) exec(ctx context.Context, container string, argv []string, attach api.AttachIO) error {
	c, err := r.container(container)
	if err != nil {
		return err
	}
	cmd, err := c.enter(ctx, argv)
	if err != nil {
		return err
	}
	if attach.TTY() {
		err = runTTY(cmd, attach)
	} else {
		if in := attach.Stdin(); in != nil {
			cmd.Stdin = in
		}
		if out := attach.Stdout(); out != nil {
			cmd.Stdout = out
		}
		if e := attach.Stderr(); e != nil {
			cmd.Stderr = e
		}
		err = cmd.Run()
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code := ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal()) // as container runtimes report a signal
		}
		return utilexec.CodeExitError{Err: fmt.Errorf("command terminated with exit code %d", code), Code: code}
	}
	return err
}

func runTTY(cmd *exec.Cmd, attach api.AttachIO) error {
	f, err := pty.Start(cmd)
	if err != nil {
		return err
	}
	defer f.Close()
	go func() {
		for size := range attach.Resize() {
			_ = pty.Setsize(f, &pty.Winsize{Rows: size.Height, Cols: size.Width})
		}
	}()
	if in := attach.Stdin(); in != nil {
		go func() { _, _ = io.Copy(f, in) }()
	}
	if out := attach.Stdout(); out != nil {
		go func() { _, _ = io.Copy(out, f) }()
	}
	return cmd.Wait()
}

// logs serves a container's log for `kubectl logs`: the current instance or the previous
// one, with tail, byte limit and follow.
func (r *podRunner) logs(ctx context.Context, container string, opts api.ContainerLogOpts) (io.ReadCloser, error) {
	c, err := r.container(container)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	n := c.restarts
	c.mu.Unlock()
	if opts.Previous {
		if n == 0 {
			return nil, errdefs.NotFoundf("previous terminated container %q in pod %q not found", c.spec.Name, r.pod.Name)
		}
		n--
	}
	path := filepath.Join(c.logDir, strconv.Itoa(n)+".log")
	data, err := os.ReadFile(path)
	if err != nil {
		if os.IsNotExist(err) {
			return io.NopCloser(strings.NewReader("")), nil
		}
		return nil, err
	}
	if opts.Tail > 0 {
		lines := bytes.SplitAfter(data, []byte("\n"))
		if len(lines) > 0 && len(lines[len(lines)-1]) == 0 {
			lines = lines[:len(lines)-1]
		}
		if len(lines) > opts.Tail {
			lines = lines[len(lines)-opts.Tail:]
		}
		data = bytes.Join(lines, nil)
	}
	if opts.LimitBytes > 0 && len(data) > opts.LimitBytes {
		data = data[:opts.LimitBytes]
	}
	if !opts.Follow || opts.Previous {
		return io.NopCloser(bytes.NewReader(data)), nil
	}
	offset, _ := os.Stat(path)
	pr, pw := io.Pipe()
	go func() {
		_, _ = pw.Write(data)
		f, err := os.Open(path)
		if err != nil {
			pw.CloseWithError(err)
			return
		}
		defer f.Close()
		if offset != nil {
			_, _ = f.Seek(offset.Size(), io.SeekStart)
		}
		buf := make([]byte, 32*1024)
		for {
			k, err := f.Read(buf)
			if k > 0 {
				if _, werr := pw.Write(buf[:k]); werr != nil {
					return
				}
				continue
			}
			if err != nil && err != io.EOF {
				pw.CloseWithError(err)
				return
			}
			c.mu.Lock()
			current := c.restarts == n && c.state.Running != nil
			c.mu.Unlock()
			if !current {
				pw.Close()
				return
			}
			select {
			case <-ctx.Done():
				pw.Close()
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	return pr, nil
}
