package conformance_test

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/netnstest"
)

// TestTunnelTakesPacketsFromTheClusterNodesOnly: the overlay's port would hand whatever it
// decapsulates to the pods, so it takes packets from the cluster's other nodes only. The
// same encapsulated packet to a pod of n1 is delivered when n2 sends it, and not when a
// stranger on the underlay does. (VXLAN drivers: a Geneve packet made this way, sent from a
// socket, is not taken by userspace Open vSwitch even from n2 — not yet understood — so the
// ovs driver's check, a tun_src match per node, is shown by its flow tests and the lab.)
func TestTunnelTakesPacketsFromTheClusterNodesOnly(t *testing.T) {
	netnstest.RequireRoot(t)
	for _, d := range drivers {
		if d.encap != "vxlan" {
			continue
		}
		t.Run(d.name, func(t *testing.T) {
			n1, n2 := twoNodes(t, d)
			pod, _ := n1.addPod(t, "a", "10.99.1.5/24")
			stranger := netnstest.New(t, "stranger")
			n1.sw.Plug(t, stranger, "pstr", "172.29.0.13/24")
			in, err := pod.ListenUDP("10.99.1.5:7000")
			if err != nil {
				t.Fatal(err)
			}
			defer in.Close()
			port, packet := encapsulated(d.encap, netip.MustParseAddr("10.99.2.99"), netip.MustParseAddr("10.99.1.5"), 7000)
			send := func(from *netnstest.Netns, src string) []netip.AddrPort {
				t.Helper()
				err := from.Do(func() error {
					c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(src)}, &net.UDPAddr{IP: net.ParseIP("172.29.0.11"), Port: port})
					if err != nil {
						return err
					}
					defer c.Close()
					_, err = c.Write(packet)
					return err
				})
				if err != nil {
					t.Fatal(err)
				}
				return netnstest.ReceiveUDP(in, 1, time.Second)
			}
			// n2's packet shows the encapsulation is right (else the test shows nothing).
			var got []netip.AddrPort
			for range 5 { // the first may wait for n1 to learn n2's MAC
				if got = send(n2.ns, "172.29.0.12"); len(got) == 1 {
					break
				}
			}
			if len(got) != 1 {
				t.Fatalf("the packet encapsulated by n2 did not reach the pod: the test shows nothing")
			}
			if got := send(stranger, "172.29.0.13"); len(got) != 0 {
				t.Errorf("a stranger on the underlay reached the pod through the tunnel (from %v)", got)
			}
		})
	}
}

// encapsulated is a UDP packet from src to dst:dstPort inside an Ethernet frame, with the
// overlay's header (VNI 1) before it, and the overlay's UDP port.
func encapsulated(encap string, src, dst netip.Addr, dstPort int) (int, []byte) {
	payload := []byte("through the tunnel")
	udp := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(udp[0:], 40000)
	binary.BigEndian.PutUint16(udp[2:], uint16(dstPort))
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	copy(udp[8:], payload) // checksum 0: none, valid over IPv4
	ip := make([]byte, 20, 20+len(udp))
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
	copy(ip[12:], src.AsSlice())
	copy(ip[16:], dst.AsSlice())
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	ip = append(ip, udp...)
	frame := append([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x99, 0x08, 0x00}, ip...)
	header := make([]byte, 8)
	header[6] = 1 // VNI 1, in bytes 4–6
	if encap == "geneve" {
		binary.BigEndian.PutUint16(header[2:], 0x6558) // an Ethernet frame follows
		return 6081, append(header, frame...)
	}
	header[0] = 0x08 // the VNI is valid
	return 4789, append(header, frame...)
}
