package bgp

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetricsReportEachSession(t *testing.T) {
	m := NewMetrics()
	m.Set([]PeerStatus{
		{Name: "tor", Address: netip.MustParseAddr("172.30.1.254"), State: "Established", PrefixesSent: 2, PrefixesReceived: 1},
		{Name: "edge", Address: netip.MustParseAddr("172.30.1.253"), State: "Active"},
	})
	want := `
# HELP weft_bgp_prefixes_received Prefixes the peer announced and the speaker accepted.
# TYPE weft_bgp_prefixes_received gauge
weft_bgp_prefixes_received{address="172.30.1.253",peer="edge"} 0
weft_bgp_prefixes_received{address="172.30.1.254",peer="tor"} 1
# HELP weft_bgp_prefixes_sent Prefixes the speaker announces to the peer.
# TYPE weft_bgp_prefixes_sent gauge
weft_bgp_prefixes_sent{address="172.30.1.253",peer="edge"} 0
weft_bgp_prefixes_sent{address="172.30.1.254",peer="tor"} 2
# HELP weft_bgp_session_established 1 while the BGP session with the peer is Established.
# TYPE weft_bgp_session_established gauge
weft_bgp_session_established{address="172.30.1.253",peer="edge"} 0
weft_bgp_session_established{address="172.30.1.254",peer="tor"} 1
`
	if err := testutil.CollectAndCompare(m, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	// The speaker stopped: no sessions, no series.
	m.Set(nil)
	if n := testutil.CollectAndCount(m); n != 0 {
		t.Errorf("%d series after the speaker stopped", n)
	}
}
