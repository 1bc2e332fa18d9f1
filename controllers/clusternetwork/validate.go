package clusternetwork

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// Problem is one reason a ClusterNetwork cannot be realized.
type Problem struct {
	Reason  string
	Message string
}

// Validate checks a spec for what the schema cannot express. The CRD's CEL rules already refuse
// most of these at admission; they are checked again here because objects stored under an
// older schema never went through the newer rules.
func Validate(spec fabricv1.ClusterNetworkSpec, backends []fabricv1.DatapathBackend) []Problem {
	var problems []Problem
	pods, p := parseCIDRs("podCIDRs", spec.PodCIDRs)
	problems = append(problems, p...)
	svcs, p := parseCIDRs("serviceCIDRs", spec.ServiceCIDRs)
	problems = append(problems, p...)

	for _, a := range pods {
		for _, b := range svcs {
			if a.Overlaps(b) {
				problems = append(problems, Problem{fabricv1.ReasonOverlappingCIDR,
					fmt.Sprintf("podCIDR %s overlaps serviceCIDR %s", a, b)})
			}
		}
	}

	pool, p := parseCIDRs("overlap.aliasPool", spec.Overlap.AliasPool)
	problems = append(problems, p...)
	if len(spec.Overlap.AliasPool) == 0 {
		pool = spec.Overlap.Pool()
	}
	for _, a := range pool {
		for _, b := range append(slices.Clone(pods), svcs...) {
			if a.Overlaps(b) {
				problems = append(problems, Problem{fabricv1.ReasonOverlappingCIDR,
					fmt.Sprintf("the alias pool %s overlaps %s, a range of this cluster: name another in spec.overlap.aliasPool", a, b)})
			}
		}
	}

	backend := spec.Datapath.Backend
	if backend == "" {
		backend = fabricv1.DatapathOVS
	}
	if !slices.Contains(backends, backend) {
		names := make([]string, len(backends))
		for i, b := range backends {
			names[i] = string(b)
		}
		problems = append(problems, Problem{fabricv1.ReasonUnsupportedBackend,
			fmt.Sprintf("datapath backend %q is not available in this weft build (available: %s)",
				backend, strings.Join(names, ", "))})
	}
	return problems
}

// parseCIDRs parses a list of CIDRs and checks each is a network address, one per family.
func parseCIDRs(field string, cidrs []fabricv1.CIDR) ([]netip.Prefix, []Problem) {
	var (
		out      []netip.Prefix
		problems []Problem
		seen     = map[bool]netip.Prefix{} // by is-IPv4
	)
	for _, c := range cidrs {
		pfx, err := netip.ParsePrefix(string(c))
		if err != nil {
			problems = append(problems, Problem{fabricv1.ReasonInvalidCIDR,
				fmt.Sprintf("%s: %q is not a CIDR", field, c)})
			continue
		}
		if pfx.Masked() != pfx {
			problems = append(problems, Problem{fabricv1.ReasonInvalidCIDR,
				fmt.Sprintf("%s: %s has host bits set (did you mean %s?)", field, c, pfx.Masked())})
			continue
		}
		if prev, dup := seen[pfx.Addr().Is4()]; dup {
			problems = append(problems, Problem{fabricv1.ReasonInvalidCIDR,
				fmt.Sprintf("%s: %s and %s are the same IP family; give at most one per family", field, prev, pfx)})
			continue
		}
		seen[pfx.Addr().Is4()] = pfx
		out = append(out, pfx)
	}
	return out, problems
}

// summarize joins problems into one condition reason (the first problem's) and message.
func summarize(problems []Problem) (reason, message string) {
	msgs := make([]string, len(problems))
	for i, p := range problems {
		msgs[i] = p.Message
	}
	return problems[0].Reason, strings.Join(msgs, "; ")
}
