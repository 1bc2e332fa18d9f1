// Package packet reads the headers of IPv4 frames that datapaths hand to the agent and
// builds the answers of Reject rules: a TCP reset for TCP, an ICMP "communication
// administratively prohibited" for anything else.
package packet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// IP protocol numbers.
const (
	ProtoICMP = 1
	ProtoTCP  = 6
	ProtoUDP  = 17
	ProtoSCTP = 132
)

const (
	ethLen       = 14
	etherTypeIP4 = 0x0800
	tcpFlagFIN   = 0x01
	tcpFlagSYN   = 0x02
	tcpFlagRST   = 0x04
	tcpFlagACK   = 0x10
)

// Info is what a frame's headers say.
type Info struct {
	Src, Dst         netip.Addr
	Protocol         uint8
	SrcPort, DstPort uint16
	// TCPFlags of a TCP segment.
	TCPFlags uint8
}

// ProtocolName is the protocol as Kubernetes spells it (or its number).
func (i Info) ProtocolName() string {
	switch i.Protocol {
	case ProtoTCP:
		return "TCP"
	case ProtoUDP:
		return "UDP"
	case ProtoSCTP:
		return "SCTP"
	case ProtoICMP:
		return "ICMP"
	}
	return fmt.Sprint(i.Protocol)
}

// ip4 locates the IPv4 header and the transport payload of an Ethernet frame.
func ip4(frame []byte) (ip, l4 []byte, err error) {
	if len(frame) < ethLen+20 || binary.BigEndian.Uint16(frame[12:]) != etherTypeIP4 {
		return nil, nil, errors.New("not an IPv4 frame")
	}
	ip = frame[ethLen:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[0]>>4 != 4 || ihl < 20 || len(ip) < ihl {
		return nil, nil, errors.New("bad IPv4 header")
	}
	return ip, ip[ihl:], nil
}

// Parse reads an Ethernet frame's IPv4 and transport headers.
func Parse(frame []byte) (Info, error) {
	ip, l4, err := ip4(frame)
	if err != nil {
		return Info{}, err
	}
	in := Info{Src: netip.AddrFrom4([4]byte(ip[12:16])), Dst: netip.AddrFrom4([4]byte(ip[16:20])), Protocol: ip[9]}
	switch in.Protocol {
	case ProtoTCP, ProtoUDP, ProtoSCTP:
		if len(l4) >= 4 {
			in.SrcPort, in.DstPort = binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:])
		}
		if in.Protocol == ProtoTCP && len(l4) >= 14 {
			in.TCPFlags = l4[13]
		}
	}
	return in, nil
}

// Reject builds the frame that refuses the given one, addressed back to its sender: a TCP
// reset for TCP (none for a reset), else ICMP destination unreachable, code 13.
func Reject(frame []byte) ([]byte, error) {
	ip, l4, err := ip4(frame)
	if err != nil {
		return nil, err
	}
	ihl := int(ip[0]&0x0f) * 4
	totalLen := int(binary.BigEndian.Uint16(ip[2:]))
	if ip[9] == ProtoTCP {
		if len(l4) < 20 {
			return nil, errors.New("short TCP header")
		}
		flags := l4[13]
		if flags&tcpFlagRST != 0 {
			return nil, errors.New("no reset answers a reset")
		}
		dataOff := int(l4[12]>>4) * 4
		payload := totalLen - ihl - dataOff
		if payload < 0 {
			payload = 0
		}
		seq := binary.BigEndian.Uint32(l4[4:])
		ack := seq + uint32(payload)
		if flags&tcpFlagSYN != 0 {
			ack++
		}
		if flags&tcpFlagFIN != 0 {
			ack++
		}
		tcp := make([]byte, 20)
		copy(tcp[0:2], l4[2:4]) // ports swapped
		copy(tcp[2:4], l4[0:2])
		rflags := uint8(tcpFlagRST | tcpFlagACK)
		if flags&tcpFlagACK != 0 {
			// Answer an acknowledging segment with its acknowledgement number as sequence.
			copy(tcp[4:8], l4[8:12])
		}
		binary.BigEndian.PutUint32(tcp[8:], ack)
		tcp[12] = 5 << 4
		tcp[13] = rflags
		return frameFor(frame, ip, ProtoTCP, tcp), nil
	}
	if ip[9] == ProtoICMP && len(l4) > 0 && l4[0] != 8 {
		return nil, errors.New("only ICMP echo requests are answered")
	}
	// ICMP: type 3, code 13, unused, the original IP header and 8 bytes of its payload.
	quote := ihl + 8
	if quote > len(ip) {
		quote = len(ip)
	}
	icmp := make([]byte, 8+quote)
	icmp[0], icmp[1] = 3, 13
	copy(icmp[8:], ip[:quote])
	binary.BigEndian.PutUint16(icmp[2:], checksum(icmp, 0))
	return frameFor(frame, ip, ProtoICMP, icmp), nil
}

// frameFor wraps a transport payload into the reverse of the original frame.
func frameFor(orig, origIP []byte, proto uint8, payload []byte) []byte {
	out := make([]byte, ethLen+20+len(payload))
	copy(out[0:6], orig[6:12]) // to the sender's MAC
	copy(out[6:12], orig[0:6])
	binary.BigEndian.PutUint16(out[12:], etherTypeIP4)
	ip := out[ethLen:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(payload)))
	ip[8] = 64
	ip[9] = proto
	copy(ip[12:16], origIP[16:20]) // from the original destination
	copy(ip[16:20], origIP[12:16])
	binary.BigEndian.PutUint16(ip[10:], checksum(ip[:20], 0))
	copy(ip[20:], payload)
	if proto == ProtoTCP {
		seg := ip[20:]
		// The pseudo-header: addresses, protocol, length.
		var sum uint32
		for i := 12; i < 20; i += 2 {
			sum += uint32(binary.BigEndian.Uint16(ip[i:]))
		}
		sum += uint32(ProtoTCP) + uint32(len(seg))
		binary.BigEndian.PutUint16(seg[16:], checksum(seg, sum))
	}
	return out
}

// checksum is the Internet checksum of b, starting from a partial sum.
func checksum(b []byte, sum uint32) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
