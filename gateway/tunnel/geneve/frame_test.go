package geneve

import (
	"bytes"
	"strings"
	"testing"
)

func TestHeaderOnTheWire(t *testing.T) {
	ip4 := []byte{0x45, 0, 0, 20}
	b := make([]byte, headerLen+len(ip4))
	copy(b[headerLen:], ip4)
	if err := putHeader(b, 0x57ef, b[headerLen:]); err != nil {
		t.Fatal(err)
	}
	// RFC 8926: version 0, no options, O and C clear, protocol type IPv4, VNI 0x0057ef,
	// reserved byte zero.
	if want := []byte{0x00, 0x00, 0x08, 0x00, 0x00, 0x57, 0xef, 0x00}; !bytes.Equal(b[:headerLen], want) {
		t.Errorf("header % x, want % x", b[:headerLen], want)
	}
	if start, err := payload(b, 0x57ef); err != nil || start != headerLen {
		t.Errorf("own frame: payload at %d (%v), want %d", start, err, headerLen)
	}
	ip6 := []byte{0x60, 0, 0, 0}
	b6 := append(make([]byte, headerLen), ip6...)
	if err := putHeader(b6, 1, b6[headerLen:]); err != nil || b6[2] != 0x86 || b6[3] != 0xdd {
		t.Errorf("IPv6 protocol type % x (%v), want 86 dd", b6[2:4], err)
	}
	for _, bad := range [][]byte{{}, {0x00, 1, 2}} {
		if err := putHeader(make([]byte, headerLen+len(bad)), 1, bad); err == nil {
			t.Errorf("packet % x was encapsulated", bad)
		}
	}
}

func TestPayloadOfReceivedFrames(t *testing.T) {
	ipv4 := []byte{0x45, 0, 0, 20}
	ether := append([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x08, 0x00}, ipv4...)
	for _, c := range []struct {
		name  string
		frame []byte
		start int
		err   string
	}{
		{"IP payload", append([]byte{0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x07, 0x00}, ipv4...), 8, ""},
		{"Ethernet payload (other Geneve ends)", append([]byte{0x00, 0x00, 0x65, 0x58, 0x00, 0x00, 0x07, 0x00}, ether...), 22, ""},
		{"two option words skipped", append([]byte{0x02, 0x00, 0x08, 0x00, 0x00, 0x00, 0x07, 0x00, 1, 2, 3, 4, 5, 6, 7, 8}, ipv4...), 16, ""},
		{"OAM bit alone is fine", append([]byte{0x00, 0x80, 0x08, 0x00, 0x00, 0x00, 0x07, 0x00}, ipv4...), 8, ""},
		{"critical options", append([]byte{0x01, 0x40, 0x08, 0x00, 0x00, 0x00, 0x07, 0x00, 1, 2, 3, 4}, ipv4...), 0, "critical"},
		{"another VNI", append([]byte{0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x08, 0x00}, ipv4...), 0, "VNI 8"},
		{"version 1", append([]byte{0x40, 0x00, 0x08, 0x00, 0x00, 0x00, 0x07, 0x00}, ipv4...), 0, "version 1"},
		{"ARP in Ethernet", append([]byte{0x00, 0x00, 0x65, 0x58, 0x00, 0x00, 0x07, 0x00}, append(ether[:12:12], 0x08, 0x06, 0, 1)...), 0, "protocol type 0x0806"},
		{"IPv6 type, IPv4 packet", append([]byte{0x00, 0x00, 0x86, 0xdd, 0x00, 0x00, 0x07, 0x00}, ipv4...), 0, "does not match"},
		{"short", []byte{0, 0, 8, 0}, 0, "shorter"},
		{"no payload", []byte{0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x07, 0x00}, 0, "no payload"},
		{"options beyond the end", []byte{0x3f, 0x00, 0x08, 0x00, 0x00, 0x00, 0x07, 0x00, 0x45}, 0, "no payload"},
	} {
		start, err := payload(c.frame, 7)
		switch {
		case c.err == "" && (err != nil || start != c.start):
			t.Errorf("%s: payload at %d (%v), want %d", c.name, start, err, c.start)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%s: error %v, want one saying %q", c.name, err, c.err)
		}
	}
}

func FuzzPayload(f *testing.F) {
	f.Add([]byte{0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x07, 0x00, 0x45})
	f.Add([]byte{0x3f, 0x00, 0x65, 0x58, 0x00, 0x00, 0x07, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		start, err := payload(b, 7)
		if err == nil && (start <= 0 || start >= len(b)) {
			t.Fatalf("payload at %d of a %d-byte frame", start, len(b))
		}
	})
}
