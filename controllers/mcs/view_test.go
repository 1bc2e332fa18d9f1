package mcs

import (
	"fmt"
	"net/netip"
	"testing"

	discoveryv1 "k8s.io/api/discovery/v1"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

func TestWithinRanges(t *testing.T) {
	ranges := []fabricv1.RangeMap{
		{Remote: netip.MustParsePrefix("10.244.0.0/16"), Local: netip.MustParsePrefix("100.64.0.0/16")}, // aliased
		{Remote: netip.MustParsePrefix("10.250.0.0/24"), Local: netip.MustParsePrefix("10.250.0.0/24")}, // not
	}
	eps := []fabricv1.RecordEndpoints{{Endpoints: []discoveryv1.Endpoint{
		{Addresses: []string{"10.244.3.9"}},
		{Addresses: []string{"10.250.0.7", "169.254.169.254"}},
		{Addresses: []string{"10.96.0.1"}},
		{Addresses: []string{"not an address"}},
	}}}
	kept, dropped := withinRanges(eps, ranges)
	var got []string
	for _, e := range kept[0].Endpoints {
		got = append(got, fmt.Sprint(e.Addresses))
	}
	if want := "[[100.64.3.9] [10.250.0.7]]"; fmt.Sprint(got) != want {
		t.Errorf("kept %v, want %s (as this cluster sees them)", got, want)
	}
	if want := "[169.254.169.254 10.96.0.1 not an address]"; fmt.Sprint(dropped) != want {
		t.Errorf("dropped %v, want %s", dropped, want)
	}
	if eps[0].Endpoints[0].Addresses[0] != "10.244.3.9" {
		t.Error("the record (the informer's object) was changed")
	}
}
