package packet

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func frame(proto uint8, l4 []byte) []byte {
	f := make([]byte, 14+20+len(l4))
	copy(f[0:6], []byte{2, 0, 0, 0, 0, 2})
	copy(f[6:12], []byte{2, 0, 0, 0, 0, 1})
	binary.BigEndian.PutUint16(f[12:], etherTypeIP4)
	ip := f[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4)))
	ip[8], ip[9] = 64, proto
	copy(ip[12:], []byte{10, 0, 0, 1, 10, 0, 0, 2})
	copy(ip[20:], l4)
	return f
}

func TestRejectAnswersASynWithAReset(t *testing.T) {
	syn := make([]byte, 20)
	binary.BigEndian.PutUint16(syn[0:], 40000)
	binary.BigEndian.PutUint16(syn[2:], 8080)
	binary.BigEndian.PutUint32(syn[4:], 1000)
	syn[12], syn[13] = 5<<4, tcpFlagSYN
	rst, err := Reject(frame(ProtoTCP, syn))
	if err != nil {
		t.Fatal(err)
	}
	in, err := Parse(rst)
	if err != nil {
		t.Fatal(err)
	}
	if in.Src != netip.MustParseAddr("10.0.0.2") || in.Dst != netip.MustParseAddr("10.0.0.1") || in.SrcPort != 8080 || in.DstPort != 40000 {
		t.Errorf("reset addressed %+v", in)
	}
	if in.TCPFlags != tcpFlagRST|tcpFlagACK {
		t.Errorf("flags %#x", in.TCPFlags)
	}
	seg := rst[34:]
	if ack := binary.BigEndian.Uint32(seg[8:]); ack != 1001 {
		t.Errorf("ack %d, want 1001", ack)
	}
	ip := rst[14:34]
	if checksum(ip, 0) != 0 {
		t.Error("bad IP checksum")
	}
	var pseudo uint32
	for i := 12; i < 20; i += 2 {
		pseudo += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	pseudo += ProtoTCP + uint32(len(seg))
	if checksum(seg, pseudo) != 0 {
		t.Error("bad TCP checksum")
	}
	if _, err := Reject(rst); err == nil {
		t.Error("a reset was answered")
	}
}

func TestRejectAnswersUDPWithICMP(t *testing.T) {
	udp := make([]byte, 12)
	binary.BigEndian.PutUint16(udp[0:], 5353)
	binary.BigEndian.PutUint16(udp[2:], 53)
	ans, err := Reject(frame(ProtoUDP, udp))
	if err != nil {
		t.Fatal(err)
	}
	in, _ := Parse(ans)
	icmp := ans[34:]
	if in.Protocol != ProtoICMP || icmp[0] != 3 || icmp[1] != 13 || checksum(icmp, 0) != 0 {
		t.Errorf("answer %+v, type %d code %d", in, icmp[0], icmp[1])
	}
	if got := netip.AddrFrom4([4]byte(icmp[8+16 : 8+20])); got != netip.MustParseAddr("10.0.0.2") {
		t.Errorf("quoted header's destination %s", got)
	}
}

func TestDNSAnswerFollowsCNAMEs(t *testing.T) {
	m := new(dns.Msg)
	m.SetQuestion("API.example.test.", dns.TypeA)
	m.Response = true
	m.Answer = []dns.RR{
		&dns.CNAME{Hdr: dns.RR_Header{Name: "api.example.test.", Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 20}, Target: "lb.cdn.test."},
		&dns.A{Hdr: dns.RR_Header{Name: "lb.cdn.test.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300}, A: net.IPv4(192, 0, 2, 7)},
	}
	payload, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	udp := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(udp[0:], 53)
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	copy(udp[8:], payload)
	recs, err := DNSAnswer(frame(ProtoUDP, udp))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Record{}
	for _, r := range recs {
		got[r.Name] = r
	}
	want := netip.MustParseAddr("192.0.2.7")
	if r := got["api.example.test"]; r.Addr != want || r.TTL != 20*time.Second {
		t.Errorf("api.example.test: %+v (want the chain's address with the CNAME's TTL)", r)
	}
	if r := got["lb.cdn.test"]; r.Addr != want || r.TTL != 300*time.Second {
		t.Errorf("lb.cdn.test: %+v", r)
	}
}
