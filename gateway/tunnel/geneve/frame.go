package geneve

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Geneve's wire format (RFC 8926, section 3): an 8-byte header, options, then the payload.
//
//	 0                   1                   2                   3
//	|Ver|  Opt Len  |O|C|    Rsvd.  |          Protocol Type        |
//	|        Virtual Network Identifier (VNI)       |    Reserved   |
//	|                    Variable-Length Options                    |
const (
	headerLen = 8
	// Protocol types (EtherTypes) of the payload: weft sends IP packets directly (what a
	// Linux geneve device with inner_proto_inherit sends and takes), and accepts Ethernet
	// frames (what other Geneve ends send by default) by dropping their Ethernet header.
	protoIPv4     = 0x0800
	protoIPv6     = 0x86dd
	protoEthernet = 0x6558
	ethernetLen   = 14
	// flagCritical (C) says the options include critical ones, which a receiver that does
	// not understand them must drop. weft understands no option.
	flagCritical = 0x40
)

// putHeader writes a header without options for an IP packet (its version in the first
// nibble of packet) into b[:headerLen].
func putHeader(b []byte, vni uint32, packet []byte) error {
	proto := uint16(protoIPv4)
	switch {
	case len(packet) == 0:
		return errors.New("empty packet")
	case packet[0]>>4 == 6:
		proto = protoIPv6
	case packet[0]>>4 != 4:
		return fmt.Errorf("not an IP packet (version %d)", packet[0]>>4)
	}
	b[0], b[1] = 0, 0
	binary.BigEndian.PutUint16(b[2:4], proto)
	binary.BigEndian.PutUint32(b[4:8], vni<<8)
	return nil
}

// payload checks a received datagram and returns where its IP packet starts.
func payload(b []byte, vni uint32) (int, error) {
	if len(b) < headerLen {
		return 0, errors.New("shorter than a Geneve header")
	}
	if v := b[0] >> 6; v != 0 {
		return 0, fmt.Errorf("unsupported geneve version %d", v)
	}
	if b[1]&flagCritical != 0 {
		return 0, errors.New("critical options")
	}
	if got := binary.BigEndian.Uint32(b[4:8]) >> 8; got != vni {
		return 0, fmt.Errorf("VNI %d, want %d", got, vni)
	}
	start := headerLen + int(b[0]&0x3f)*4
	proto := binary.BigEndian.Uint16(b[2:4])
	if proto == protoEthernet {
		if len(b) < start+ethernetLen {
			return 0, errors.New("truncated Ethernet frame")
		}
		proto = binary.BigEndian.Uint16(b[start+12 : start+14])
		start += ethernetLen
	}
	if proto != protoIPv4 && proto != protoIPv6 {
		return 0, fmt.Errorf("protocol type %#04x", proto)
	}
	if len(b) <= start {
		return 0, errors.New("no payload")
	}
	if want := uint8(4); proto == protoIPv6 && b[start]>>4 != 6 || proto == protoIPv4 && b[start]>>4 != want {
		return 0, errors.New("payload does not match its protocol type")
	}
	return start, nil
}
