package kubelet

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// InitEnv is the environment variable that carries an InitSpec to the container-init helper.
const InitEnv = "WEFT_LAB_CONTAINER_INIT"

// InitSpec is what the container-init helper does before it becomes the container's program.
type InitSpec struct {
	// Netns is the pod's network namespace path; empty stays in the kubelet's (host network).
	Netns string `json:"netns,omitempty"`
	// Hostname, when set, gives the container its own UTS namespace with that hostname.
	Hostname string   `json:"hostname,omitempty"`
	Mounts   []Mount  `json:"mounts,omitempty"`
	Dir      string   `json:"dir,omitempty"`
	Argv     []string `json:"argv"`
	Env      []string `json:"env"`
}

// Mount is a bind mount into the container's mount namespace.
type Mount struct {
	Source   string `json:"source"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly,omitempty"`
}

// ContainerInit runs in a fresh child process (the kubelet re-executes its own binary): it
// enters new mount and UTS namespaces, bind-mounts the volumes, joins the pod's network
// namespace and executes the container's program. It only returns on error.
func ContainerInit() error {
	var spec InitSpec
	if err := json.Unmarshal([]byte(os.Getenv(InitEnv)), &spec); err != nil {
		return fmt.Errorf("container-init: bad spec: %w", err)
	}
	// Namespaces belong to the thread; exec from this same thread carries them over.
	runtime.LockOSThread()
	flags := unix.CLONE_NEWNS
	if spec.Hostname != "" {
		flags |= unix.CLONE_NEWUTS
	}
	if err := unix.Unshare(flags); err != nil {
		return fmt.Errorf("unshare: %w", err)
	}
	// Slave, not private: mounts the host makes later (a new pod's network namespace under
	// /run/netns) still reach the container, as HostToContainer propagation does; the
	// container's own mounts stay its own.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("making mounts slaves: %w", err)
	}
	for _, m := range spec.Mounts {
		if err := unix.Mount(m.Source, m.Target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("mounting %s at %s: %w", m.Source, m.Target, err)
		}
		if m.ReadOnly {
			if err := unix.Mount("", m.Target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_REC, ""); err != nil {
				return fmt.Errorf("making %s read-only: %w", m.Target, err)
			}
		}
	}
	if spec.Hostname != "" {
		if err := unix.Sethostname([]byte(spec.Hostname)); err != nil {
			return fmt.Errorf("sethostname: %w", err)
		}
	}
	if spec.Netns != "" {
		fd, err := unix.Open(spec.Netns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("opening network namespace: %w", err)
		}
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("joining network namespace %s: %w", spec.Netns, err)
		}
		_ = unix.Close(fd)
	}
	if spec.Dir != "" {
		if err := os.Chdir(spec.Dir); err != nil {
			return fmt.Errorf("working dir %s: %w", spec.Dir, err)
		}
	}
	if len(spec.Argv) == 0 {
		return errors.New("container-init: no program")
	}
	err := syscall.Exec(spec.Argv[0], spec.Argv, spec.Env)
	return fmt.Errorf("exec %s: %w", spec.Argv[0], err)
}

// ensureMountPoint makes sure target exists as a directory (or, for a file source, a file).
// It returns the topmost path it created ("" if none), so the lab can remove it later.
func ensureMountPoint(source, target string) (string, error) {
	if _, err := os.Lstat(target); err == nil {
		return "", nil
	}
	st, err := os.Stat(source)
	if err != nil {
		return "", err
	}
	top := target
	for p := filepath.Dir(target); p != "/" && p != "."; p = filepath.Dir(p) {
		if _, err := os.Lstat(p); err == nil {
			break
		}
		top = p
	}
	if st.IsDir() {
		return top, os.MkdirAll(target, 0o755)
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return top, err
	}
	f, err := os.OpenFile(target, os.O_CREATE|os.O_RDONLY, 0o644)
	if err != nil {
		return top, err
	}
	return top, f.Close()
}
