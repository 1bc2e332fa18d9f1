// Package netlab builds the lab's networks out of network namespaces: an underlay namespace
// holding one bridge (the lab's "switch"), and one namespace per host (control plane or node)
// plugged into it by a veth pair. It drives iproute2 (`ip`), which every Linux machine has,
// and never touches the host's own network namespace.
package netlab

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// NetnsDir is where named network namespaces are mounted (the `ip netns` convention).
const NetnsDir = "/run/netns"

// Path returns the mount path of a named namespace.
func Path(name string) string { return filepath.Join(NetnsDir, name) }

// IP runs `ip args...` and returns a clear error with its output.
func IP(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// AddNetns creates a named namespace with its loopback up. An existing one is reused.
func AddNetns(name string) error {
	if _, err := os.Stat(Path(name)); err != nil {
		if err := IP("netns", "add", name); err != nil {
			return err
		}
	}
	return IP("-n", name, "link", "set", "lo", "up")
}

// DelNetns removes a named namespace (and with it every link inside). Missing is fine.
func DelNetns(name string) error {
	if _, err := os.Stat(Path(name)); err != nil {
		return nil
	}
	return IP("netns", "del", name)
}

// List returns the named namespaces whose names start with prefix.
func List(prefix string) ([]string, error) {
	entries, err := os.ReadDir(NetnsDir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// Sysctl sets a net.* sysctl inside a namespace (those are per namespace).
func Sysctl(netns, key, value string) error {
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	out, err := exec.Command("nsenter", "--net="+Path(netns), "sh", "-c", "echo "+value+" > "+path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("sysctl %s=%s in %s: %w: %s", key, value, netns, err, bytes.TrimSpace(out))
	}
	return nil
}

// Switch is a bridge in its own namespace that hosts plug into.
type Switch struct {
	Netns  string
	Bridge string
}

// NewSwitch creates (or reuses) the underlay namespace and its bridge.
func NewSwitch(netns string) (*Switch, error) {
	s := &Switch{Netns: netns, Bridge: "br0"}
	if err := AddNetns(netns); err != nil {
		return nil, err
	}
	if err := IP("-n", netns, "link", "show", s.Bridge); err != nil {
		if err := IP("-n", netns, "link", "add", s.Bridge, "type", "bridge"); err != nil {
			return nil, err
		}
	}
	return s, IP("-n", netns, "link", "set", s.Bridge, "up")
}

// Plug connects host namespace hostNetns to the switch: a veth named port on the switch side
// and eth0 on the host side, with addr (CIDR notation) on eth0.
func (s *Switch) Plug(hostNetns, port, addr string) error {
	if err := IP("-n", s.Netns, "link", "show", port); err == nil {
		return nil // already plugged
	}
	if err := IP("-n", s.Netns, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", hostNetns); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"-n", s.Netns, "link", "set", port, "master", s.Bridge, "up"},
		{"-n", hostNetns, "addr", "add", addr, "dev", "eth0"},
		{"-n", hostNetns, "link", "set", "eth0", "up"},
	} {
		if err := IP(args...); err != nil {
			return err
		}
	}
	return nil
}

// Inode identifies a namespace, to find the processes inside it.
func Inode(path string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// PIDsIn returns the processes whose network namespace is one of the given inodes.
func PIDsIn(inodes map[uint64]bool) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		link, err := os.Readlink(filepath.Join("/proc", e.Name(), "ns", "net"))
		if err != nil {
			continue
		}
		var ino uint64
		if _, err := fmt.Sscanf(link, "net:[%d]", &ino); err == nil && inodes[ino] {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Nft loads an nftables script inside a namespace.
func Nft(netns, script string) error {
	cmd := exec.Command("nsenter", "--net="+Path(netns), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("nft in %s: %w: %s", netns, err, bytes.TrimSpace(out))
	}
	return nil
}
