package openflow

import (
	"encoding/binary"
	"testing"
)

// flowStatsEntry is an ofp_flow_stats entry of n bytes (at least 48: the fixed part, the
// match and instructions after it are not read).
func flowStatsEntry(n int, table uint8, prio uint16, cookie, packets, bytes uint64) []byte {
	b := make([]byte, n)
	binary.BigEndian.PutUint16(b, uint16(n))
	b[2] = table
	binary.BigEndian.PutUint16(b[12:], prio)
	binary.BigEndian.PutUint64(b[24:], cookie)
	binary.BigEndian.PutUint64(b[32:], packets)
	binary.BigEndian.PutUint64(b[40:], bytes)
	return b
}

// A flow stats reply's entries are read by their own lengths (a match and instructions of
// any size after the fixed part); an entry that claims more than there is, or less than the
// fixed part, is an error, not a read past the end.
func TestParseFlowStats(t *testing.T) {
	body := append(flowStatsEntry(56, 20, 300, 0x5700000000000007, 3, 180), flowStatsEntry(80, 21, 200, 0x5702000000000009, 5, 300)...)
	got, err := parseFlowStats(body)
	if err != nil {
		t.Fatal(err)
	}
	want := []FlowStat{{TableID: 20, Priority: 300, Cookie: 0x5700000000000007, Packets: 3, Bytes: 180},
		{TableID: 21, Priority: 200, Cookie: 0x5702000000000009, Packets: 5, Bytes: 300}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	short := flowStatsEntry(48, 0, 0, 0, 0, 0)
	binary.BigEndian.PutUint16(short, 8)
	for name, bad := range map[string][]byte{
		"longer than the reply":    flowStatsEntry(56, 0, 0, 0, 0, 0)[:50],
		"shorter than fixed part":  short,
		"a truncated second entry": append(flowStatsEntry(48, 0, 0, 0, 0, 0), 0, 64, 0),
	} {
		if _, err := parseFlowStats(bad); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
