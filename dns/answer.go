package dns

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// SchemaVersion is what TXT dns-version.<zone> answers (the Kubernetes DNS specification's
// version that these names follow).
const SchemaVersion = "1.1.0"

// Answerer answers queries for one zone from the current Zone snapshot.
type Answerer struct {
	zone   string // fully qualified, lower case ("clusterset.local.")
	ttl    uint32
	labels int // labels of zone
	cur    atomic.Pointer[snapshot]
	stats  atomic.Pointer[Stats] // nil: not counted
}

// snapshot is a zone with the answers packed from it so far; Set replaces both at once,
// so a cached answer always comes from the zone it is cached with.
type snapshot struct {
	zone    *Zone
	answers *answerCache
	built   time.Time // when Set
}

// NewAnswerer answers for domain (e.g. "clusterset.local") with records of the given TTL.
func NewAnswerer(domain string, ttl uint32) *Answerer {
	zone := dns.Fqdn(strings.ToLower(domain))
	return &Answerer{zone: zone, ttl: ttl, labels: dns.CountLabel(zone)}
}

// Set makes z the snapshot answered from.
func (a *Answerer) Set(z *Zone) {
	a.cur.Store(&snapshot{zone: z, answers: newAnswerCache(), built: time.Now()})
}

// Zone is the current snapshot.
func (a *Answerer) Zone() *Zone { return a.snap().zone }

// snap is the current snapshot; before the first Set an empty one without a cache.
func (a *Answerer) snap() *snapshot {
	if s := a.cur.Load(); s != nil {
		return s
	}
	return &snapshot{}
}

// ServeDNS answers a query (miekg/dns Handler), truncating UDP answers to what the client
// accepts.
func (a *Answerer) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	start := time.Now()
	resp := a.Answer(req)
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		resp.Truncate(udpSize(req))
	}
	var qtype uint16
	if len(req.Question) > 0 {
		qtype = req.Question[0].Qtype
	}
	a.count(qtype, resp.Rcode, start)
	_ = w.WriteMsg(resp)
}

// udpSize is the largest UDP answer the client of req accepts.
func udpSize(req *dns.Msg) int {
	if o := req.IsEdns0(); o != nil {
		return max(int(o.UDPSize()), dns.MinMsgSize)
	}
	return dns.MinMsgSize
}

// Answer builds the response to a query. Names outside the zone are refused (no
// recursion); unknown names in it get NXDOMAIN, known names without records of the type
// asked NODATA, both with the zone's SOA.
func (a *Answerer) Answer(req *dns.Msg) *dns.Msg { return a.answer(a.snap().zone, req) }

func (a *Answerer) answer(z *Zone, req *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	m.RecursionAvailable = false
	if req.Opcode != dns.OpcodeQuery {
		m.Authoritative = false
		m.SetRcode(req, dns.RcodeNotImplemented)
		return m
	}
	if len(req.Question) != 1 {
		m.Authoritative = false
		m.SetRcode(req, dns.RcodeFormatError)
		return m
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	if q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY {
		m.Authoritative = false
		m.SetRcode(req, dns.RcodeRefused)
		return m
	}
	if !dns.IsSubDomain(a.zone, name) {
		m.Authoritative = false
		m.SetRcode(req, dns.RcodeRefused)
		return m
	}
	if req.IsEdns0() != nil {
		m.SetEdns0(uint16(udpSize(req)), false)
	}
	rrs, exists := a.lookup(z, name, q.Qtype, q.Name)
	switch {
	case !exists:
		m.SetRcode(req, dns.RcodeNameError)
		m.Ns = []dns.RR{a.soa()}
	case len(rrs) == 0:
		m.Ns = []dns.RR{a.soa()}
	default:
		m.Answer = rrs
	}
	return m
}

// lookup finds the records of a name in the zone (lower case) and whether the name exists.
// owner is the name as asked (answers carry its case).
func (a *Answerer) lookup(z *Zone, name string, qtype uint16, owner string) ([]dns.RR, bool) {
	labels := dns.SplitDomainName(name)
	rel := labels[:len(labels)-a.labels] // the labels below the zone
	switch len(rel) {
	case 0: // the apex
		switch qtype {
		case dns.TypeSOA:
			return []dns.RR{a.soa()}, true
		case dns.TypeNS:
			return []dns.RR{&dns.NS{Hdr: a.hdr(a.zone, dns.TypeNS), Ns: "ns.dns." + a.zone}}, true
		}
		return nil, true
	case 1:
		if rel[0] == "dns-version" {
			if qtype == dns.TypeTXT || qtype == dns.TypeANY {
				return []dns.RR{&dns.TXT{Hdr: a.hdr(owner, dns.TypeTXT), Txt: []string{SchemaVersion}}}, true
			}
			return nil, true
		}
		// svc.<zone>: exists once anything is imported.
		return nil, rel[0] == "svc" && z.Len() > 0
	case 2: // <ns>.svc.<zone>
		if rel[1] == "svc" {
			return nil, z.namespaceExists(rel[0])
		}
		return nil, false
	}
	// ... <svc>.<ns>.svc.<zone>
	if rel[len(rel)-1] != "svc" {
		return nil, false
	}
	ns, svcName := rel[len(rel)-2], rel[len(rel)-3]
	svc := z.service(svcName, ns)
	below := rel[:len(rel)-3]
	switch {
	case svc == nil:
		return nil, false
	case len(below) == 0 && (qtype == dns.TypeSRV || qtype == dns.TypeANY):
		// SRV at the Service's name itself: the records of every port.
		return append(a.serviceRecords(svc, qtype, owner), a.srvRecords(svc, svc.Ports, owner)...), true
	case len(below) == 0:
		return a.serviceRecords(svc, qtype, owner), true
	case len(below) == 2 && strings.HasPrefix(below[0], "_") && strings.HasPrefix(below[1], "_"):
		return a.srv(svc, below[0][1:], below[1][1:], qtype, owner)
	case len(below) == 2 && svc.Type == Headless:
		// <hostname>.<cluster>.<svc>...: one endpoint of a headless Service.
		for _, ep := range svc.Endpoints {
			if strings.EqualFold(ep.Hostname, below[0]) && strings.EqualFold(ep.Cluster, below[1]) {
				return a.addrs(owner, ep.Addrs, qtype), true
			}
		}
		return nil, false
	case len(below) == 1 && svc.Type == Headless:
		// <cluster>.<svc>...: exists (it has endpoints below it), holds no records.
		for _, ep := range svc.Endpoints {
			if strings.EqualFold(ep.Cluster, below[0]) {
				return nil, true
			}
		}
		return nil, false
	}
	// Never <cluster>.<svc>... for a ClusterSetIP Service.
	return nil, false
}

// namespaceExists says whether any service lives under <ns>.svc (empty non-terminals exist).
func (z *Zone) namespaceExists(ns string) bool {
	if z == nil {
		return false
	}
	for _, s := range z.services {
		if strings.EqualFold(s.Namespace, ns) {
			return true
		}
	}
	return false
}

func (a *Answerer) serviceRecords(svc *Service, qtype uint16, owner string) []dns.RR {
	if svc.Type == Headless {
		var out []dns.RR
		for _, ep := range svc.Endpoints {
			out = append(out, a.addrs(owner, ep.Addrs, qtype)...)
		}
		return out
	}
	return a.addrs(owner, svc.IPs, qtype)
}

func (a *Answerer) addrs(owner string, addrs []netip.Addr, qtype uint16) []dns.RR {
	var out []dns.RR
	for _, ip := range addrs {
		switch {
		case ip.Is4() && (qtype == dns.TypeA || qtype == dns.TypeANY):
			out = append(out, &dns.A{Hdr: a.hdr(owner, dns.TypeA), A: ip.AsSlice()})
		case ip.Is6() && !ip.Is4In6() && (qtype == dns.TypeAAAA || qtype == dns.TypeANY):
			out = append(out, &dns.AAAA{Hdr: a.hdr(owner, dns.TypeAAAA), AAAA: ip.AsSlice()})
		}
	}
	return out
}

// srv answers _<port>._<proto>.<svc>...: for a ClusterSetIP Service one record pointing at
// the Service's name; for a headless one a record per endpoint, pointing at its name.
func (a *Answerer) srv(svc *Service, portName, proto string, qtype uint16, owner string) ([]dns.RR, bool) {
	var port *Port
	for i := range svc.Ports {
		if strings.EqualFold(svc.Ports[i].Name, portName) && strings.EqualFold(svc.Ports[i].Protocol, proto) {
			port = &svc.Ports[i]
		}
	}
	if port == nil || port.Name == "" {
		return nil, false
	}
	if qtype != dns.TypeSRV && qtype != dns.TypeANY {
		return nil, true
	}
	return a.srvRecords(svc, []Port{*port}, owner), true
}

// srvRecords are the SRV records of ports: for a ClusterSetIP Service each points at the
// Service's name with the Service's port, for a headless one there is one per endpoint,
// pointing at the endpoint's name with its own (target) port. Identical records (the same
// number under several protocols) appear once.
func (a *Answerer) srvRecords(svc *Service, ports []Port, owner string) []dns.RR {
	base := strings.ToLower(svc.Name + "." + svc.Namespace + ".svc." + a.zone)
	var out []dns.RR
	seen := map[string]bool{}
	add := func(port uint16, target string) {
		if k := fmt.Sprint(port, target); !seen[k] {
			seen[k] = true
			out = append(out, &dns.SRV{Hdr: a.hdr(owner, dns.TypeSRV), Priority: 0, Weight: 100, Port: port, Target: target})
		}
	}
	for _, port := range ports {
		if svc.Type != Headless {
			add(port.Port, base)
			continue
		}
		for _, ep := range svc.Endpoints {
			p := port.Port
			for _, epp := range ep.Ports {
				if strings.EqualFold(epp.Name, port.Name) && strings.EqualFold(epp.Protocol, port.Protocol) {
					p = epp.Port
				}
			}
			add(p, strings.ToLower(ep.Hostname+"."+ep.Cluster+"."+base))
		}
	}
	return out
}

func (a *Answerer) hdr(name string, t uint16) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: a.ttl}
}

func (a *Answerer) soa() dns.RR {
	return &dns.SOA{Hdr: a.hdr(a.zone, dns.TypeSOA), Ns: "ns.dns." + a.zone, Mbox: "hostmaster." + a.zone,
		Serial: 1, Refresh: 7200, Retry: 1800, Expire: 86400, Minttl: a.ttl}
}
