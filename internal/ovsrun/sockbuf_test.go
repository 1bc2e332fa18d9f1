package ovsrun

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func rcvbuf(t *testing.T, fd int) int {
	t.Helper()
	v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestGrowPacketSockets grows this test process's own sockets through pidfd_getfd, as
// weft-ovs does ovs-vswitchd's: the packet socket's buffer grows, a UDP socket's doesn't,
// and a socket already handled is not looked at again.
func TestGrowPacketSockets(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: packet sockets and SO_RCVBUFFORCE")
	}
	const size = 1 << 20
	pkt, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	udp, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(udp)
	for _, fd := range []int{pkt, udp} {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 64<<10); err != nil {
			t.Fatal(err)
		}
	}
	udpBefore := rcvbuf(t, udp)

	done := map[uint64]bool{}
	grown, err := GrowPacketSockets(os.Getpid(), size, done)
	if err != nil {
		t.Fatal(err)
	}
	if grown != 1 {
		t.Errorf("grew %d sockets, want 1 (the packet socket)", grown)
	}
	if got := rcvbuf(t, pkt); got < 2*size {
		t.Errorf("packet socket receive buffer %d after growing, want %d", got, 2*size)
	}
	if got := rcvbuf(t, udp); got != udpBefore {
		t.Errorf("UDP socket receive buffer changed from %d to %d", udpBefore, got)
	}
	handled := len(done)
	if handled < 2 {
		t.Fatalf("%d sockets recorded as handled, want at least the two of this test", handled)
	}

	// A second pass finds nothing to do; a closed socket is forgotten.
	if grown, err := GrowPacketSockets(os.Getpid(), size, done); err != nil || grown != 0 {
		t.Errorf("second pass grew %d sockets (err %v), want 0", grown, err)
	}
	unix.Close(pkt)
	if _, err := GrowPacketSockets(os.Getpid(), size, done); err != nil {
		t.Fatal(err)
	}
	if len(done) != handled-1 {
		t.Errorf("%d sockets recorded after closing one of %d, want %d", len(done), handled, handled-1)
	}
}

func TestGrowPacketSocketsNoProcess(t *testing.T) {
	if _, err := GrowPacketSockets(1<<30, 1<<20, map[uint64]bool{}); err == nil {
		t.Error("no error for a process that does not exist")
	}
}
