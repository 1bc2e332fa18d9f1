package lab

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/weft-net/weft/lab/netlab"
)

// Cleanup removes everything a lab left on the machine, whether it stopped cleanly or was
// killed: every process inside one of its network namespaces (names starting with prefix), the namespaces themselves (and with
// them every link and pod network), and mount points created for containers. Logs stay.
func Cleanup(stateDir, prefix string) error {
	var errs []error
	names, err := netlab.List(prefix)
	if err != nil {
		errs = append(errs, err)
	}
	inodes := map[uint64]bool{}
	for _, n := range names {
		if ino, err := netlab.Inode(netlab.Path(n)); err == nil {
			inodes[ino] = true
		}
	}
	for attempt := 0; attempt < 50; attempt++ {
		pids := netlab.PIDsIn(inodes)
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if left := netlab.PIDsIn(inodes); len(left) > 0 {
		errs = append(errs, errors.New("processes still running in lab namespaces"))
	}
	for _, n := range names {
		if err := netlab.DelNetns(n); err != nil {
			errs = append(errs, err)
		}
	}
	// Mount points are shared by every lab on the machine: removing one that another lab's
	// container is mounted on would detach that mount, so they go only with the last lab.
	others, _ := netlab.List(NetnsPrefix)
	created := filepath.Join(stateDir, "created-paths")
	if data, err := os.ReadFile(created); err == nil && len(others) == 0 {
		for _, p := range strings.Fields(string(data)) {
			removeEmptyTree(p)
		}
		_ = os.Remove(created)
	}
	// The lab's bpffs (ebpf clusters): its pins, and the maps they hold, go with it.
	if err := syscall.Unmount(BPFFSDir(stateDir), syscall.MNT_DETACH); err == nil {
		_ = os.Remove(BPFFSDir(stateDir))
	}
	for _, f := range []string{ReadyFile, PIDFile, StatusFile} {
		_ = os.Remove(filepath.Join(stateDir, f))
	}
	return errors.Join(errs...)
}

// removeEmptyTree removes a path if it holds nothing but empty directories and empty files
// (a mount point the lab created); anything with content stays.
func removeEmptyTree(path string) {
	st, err := os.Lstat(path)
	if err != nil {
		return
	}
	if !st.IsDir() {
		if st.Size() == 0 {
			_ = os.Remove(path)
		}
		return
	}
	entries, _ := os.ReadDir(path)
	for _, e := range entries {
		removeEmptyTree(filepath.Join(path, e.Name()))
	}
	_ = os.Remove(path) // fails, harmlessly, unless now empty
}

// RemoveState deletes the lab's clusters (etcd data, certificates, node directories,
// kubeconfigs) so the next `lab up` starts fresh. Logs stay. Call it only once nothing of
// the lab runs any more (after Cleanup).
func RemoveState(stateDir string) error {
	entries, err := os.ReadDir(stateDir)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if e.Name() == "logs" || e.Name() == "daemon.log" || e.Name() == FailedFile {
			continue
		}
		if err := os.RemoveAll(filepath.Join(stateDir, e.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
