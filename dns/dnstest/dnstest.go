// Package dnstest helps tests of weft-dns ask questions and read answers.
package dnstest

import (
	"sort"
	"strings"

	"github.com/miekg/dns"
)

// Query is a recursive-desired question for name and type, as a stub resolver sends it.
func Query(name string, qtype uint16) *dns.Msg {
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	q.RecursionDesired = true
	return q
}

// Records prints the answer section compactly and sorted, each record without owner, TTL
// and class: "A 10.96.0.20; SRV 0 100 80 web.shop.svc.clusterset.local.".
func Records(m *dns.Msg) string {
	var out []string
	for _, rr := range m.Answer {
		f := strings.Fields(rr.String())
		out = append(out, strings.Join(f[3:], " "))
	}
	sort.Strings(out)
	return strings.Join(out, "; ")
}
