// Package dns is weft-dns: the authoritative server for the clusterset zone
// (clusterset.local by default) of Multi-Cluster Services, following the KEP-1645 DNS
// specification. It answers from a Zone, an immutable snapshot of the ServiceImports and
// their EndpointSlices that the server swaps whole whenever they change.
package dns

import (
	"net/netip"
	"sort"
	"strings"
)

// Service types, as in ServiceImport.spec.type.
const (
	ClusterSetIP = "ClusterSetIP"
	Headless     = "Headless"
)

// Port is a named port of a Service.
type Port struct {
	Name     string
	Protocol string // TCP, UDP, SCTP
	Port     uint16
}

// Endpoint is one backend of a headless Service.
type Endpoint struct {
	Addrs    []netip.Addr
	Hostname string // "" gets a name from its first address
	Cluster  string
	Ports    []Port // the endpoint's own (target) ports, by name
}

// Service is an imported Service.
type Service struct {
	Namespace, Name string
	Type            string
	IPs             []netip.Addr // the VIPs of a ClusterSetIP Service
	Ports           []Port
	Endpoints       []Endpoint // of a Headless Service
}

// Zone is what the server answers from; build it with NewZone and never change it.
type Zone struct {
	services map[string]*Service // by "<name>.<namespace>", lower case
}

// NewZone indexes services.
func NewZone(services []Service) *Zone {
	z := &Zone{services: map[string]*Service{}}
	for i := range services {
		s := services[i]
		for j := range s.Endpoints {
			if s.Endpoints[j].Hostname == "" && len(s.Endpoints[j].Addrs) > 0 {
				s.Endpoints[j].Hostname = addrLabel(s.Endpoints[j].Addrs[0])
			}
		}
		sort.SliceStable(s.Endpoints, func(a, b int) bool {
			if s.Endpoints[a].Cluster != s.Endpoints[b].Cluster {
				return s.Endpoints[a].Cluster < s.Endpoints[b].Cluster
			}
			return s.Endpoints[a].Hostname < s.Endpoints[b].Hostname
		})
		z.services[strings.ToLower(s.Name+"."+s.Namespace)] = &s
	}
	return z
}

// Len is the number of services.
func (z *Zone) Len() int {
	if z == nil {
		return 0
	}
	return len(z.services)
}

func (z *Zone) service(name, namespace string) *Service {
	if z == nil {
		return nil
	}
	return z.services[name+"."+namespace]
}

// addrLabel names an endpoint without a hostname by its address (10-1-2-3, fd00--1).
func addrLabel(a netip.Addr) string {
	s := a.String()
	if a.Is4() {
		return strings.ReplaceAll(s, ".", "-")
	}
	return strings.ReplaceAll(s, ":", "-")
}
