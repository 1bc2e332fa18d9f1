package ovsrun

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultPacketSocketBuffer is the receive and send buffer weft-ovs gives every packet
// socket of ovs-vswitchd.
//
// In the userspace datapath (datapath_type=netdev) ovs-vswitchd reads each system port
// (veth of a pod, the node's uplink) through an AF_PACKET socket, from one thread. The
// kernel's default buffer (net.core.rmem_default, 208 KiB: about 90 full-size frames) fills
// whenever that thread is off the CPU for a millisecond, and the packet socket then drops
// silently — no interface counter shows it, only `ss -0 -m` (skmem d…). Measured in the lab
// (2 cores): 20% of a pod's TCP segments lost, 0.4 Gbit/s pod to pod; with 4 MiB, none
// lost and 0.77 Gbit/s. Open vSwitch has no setting for it, and rmem_default cannot be
// raised from inside a network namespace, so weft-ovs sets the buffer on ovs-vswitchd's
// sockets itself (see GrowPacketSockets).
//
// Not bigger than needed: a full buffer is a standing queue. With 4 MiB on every socket a
// bulk transfer through a gateway kept 300–450 ms of packets queued, all lost when the
// gateway died — gateway failover gaps of 1–1.3 s in the lab, starting that long BEFORE the
// failure. With 1 MiB they start 10–60 ms before it and the gaps are 0.47–0.66 s.
const DefaultPacketSocketBuffer = 1 << 20

// GrowPacketSockets sets SO_RCVBUFFORCE and SO_SNDBUFFORCE to size on every AF_PACKET
// socket process pid holds whose receive buffer is smaller, reaching the sockets through
// pidfd_getfd(2) (the caller needs CAP_NET_ADMIN and ptrace rights over pid, which root
// has). done holds the socket inodes already handled and is updated (sockets of other
// families too, so each socket is inspected once; closed ones are forgotten). It returns
// how many sockets it grew.
func GrowPacketSockets(pid, size int, done map[uint64]bool) (int, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var pidfd = -1
	defer func() {
		if pidfd >= 0 {
			unix.Close(pidfd)
		}
	}()
	grown, open := 0, map[uint64]bool{}
	defer func() {
		for inode := range done {
			if !open[inode] {
				delete(done, inode)
			}
		}
	}()
	for _, e := range entries {
		target, err := os.Readlink(dir + "/" + e.Name())
		if err != nil || !strings.HasPrefix(target, "socket:[") {
			continue // closed meanwhile, or not a socket
		}
		inode, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(target, "socket:["), "]"), 10, 64)
		if err != nil {
			continue
		}
		open[inode] = true
		if done[inode] {
			continue
		}
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pidfd < 0 {
			if pidfd, err = unix.PidfdOpen(pid, 0); err != nil {
				return grown, fmt.Errorf("pidfd_open %d: %w", pid, err)
			}
		}
		ours, err := unix.PidfdGetfd(pidfd, fd, 0)
		if err != nil {
			if errors.Is(err, unix.EBADF) {
				continue // closed meanwhile
			}
			return grown, fmt.Errorf("pidfd_getfd %d/%d: %w", pid, fd, err)
		}
		changed, err := growPacketSocket(ours, size)
		unix.Close(ours)
		if err != nil {
			return grown, fmt.Errorf("socket %d of process %d: %w", fd, pid, err)
		}
		done[inode] = true
		if changed {
			grown++
		}
	}
	return grown, nil
}

func growPacketSocket(fd, size int) (bool, error) {
	family, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil || family != unix.AF_PACKET {
		return false, nil
	}
	// The kernel reports twice what was set (it reserves room for its bookkeeping).
	if rcv, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF); err == nil && rcv >= 2*size {
		return false, nil
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size); err != nil {
		return false, fmt.Errorf("SO_RCVBUFFORCE: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, size); err != nil {
		return false, fmt.Errorf("SO_SNDBUFFORCE: %w", err)
	}
	return true, nil
}

// growPacketSocketsLoop keeps the packet sockets of ovs-vswitchd grown while it runs: ports
// (and so sockets) come and go with pods. A new socket waits at most one period.
func (in *Instance) growPacketSocketsLoop(ctx context.Context, size int, period time.Duration) {
	done := map[uint64]bool{}
	warned := false
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		if _, err := GrowPacketSockets(in.vsd.Process.Pid, size, done); err != nil && !warned {
			fmt.Fprintf(os.Stderr, "ovsrun: cannot grow the packet sockets of ovs-vswitchd (the userspace datapath may drop under load): %v\n", err)
			warned = true
		}
		select {
		case <-ctx.Done():
			return
		case <-in.waitDone:
			return
		case <-t.C:
		}
	}
}
