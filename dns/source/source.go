// Package source feeds weft-dns from Kubernetes: it builds the dns package's Zone from the
// cluster's ServiceImports and imported EndpointSlices, and Run keeps it current with
// informers. (The dns package itself depends on miekg/dns only, so that fuzzing it is quick.)
package source

import (
	"net/netip"

	"github.com/weft-net/weft/dns"

	discoveryv1 "k8s.io/api/discovery/v1"
	mcsv1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
)

// ZoneFrom builds a Zone from the cluster's ServiceImports and the EndpointSlices imported
// for them (labelled multicluster.kubernetes.io/service-name and source-cluster, in the
// import's namespace). Only ready endpoints are served.
func ZoneFrom(imports []mcsv1.ServiceImport, slices []discoveryv1.EndpointSlice) *dns.Zone {
	type key struct{ ns, name string }
	eps := map[key][]dns.Endpoint{}
	for _, s := range slices {
		name, cluster := s.Labels[mcsv1.LabelServiceName], s.Labels[mcsv1.LabelSourceCluster]
		if name == "" || cluster == "" {
			continue
		}
		var ports []dns.Port
		for _, p := range s.Ports {
			if p.Name == nil || p.Port == nil || *p.Port <= 0 || *p.Port > 65535 {
				continue
			}
			proto := "TCP"
			if p.Protocol != nil {
				proto = string(*p.Protocol)
			}
			ports = append(ports, dns.Port{Name: *p.Name, Protocol: proto, Port: uint16(*p.Port)})
		}
		for _, ep := range s.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			e := dns.Endpoint{Cluster: cluster, Ports: ports}
			if ep.Hostname != nil {
				e.Hostname = *ep.Hostname
			}
			for _, a := range ep.Addresses {
				if ip, err := netip.ParseAddr(a); err == nil {
					e.Addrs = append(e.Addrs, ip)
				}
			}
			if len(e.Addrs) > 0 {
				eps[key{s.Namespace, name}] = append(eps[key{s.Namespace, name}], e)
			}
		}
	}
	var services []dns.Service
	for _, si := range imports {
		s := dns.Service{Namespace: si.Namespace, Name: si.Name, Type: string(si.Spec.Type)}
		if s.Type == "" {
			s.Type = dns.ClusterSetIP
		}
		for _, p := range si.Spec.Ports {
			if p.Port <= 0 || p.Port > 65535 {
				continue
			}
			proto := string(p.Protocol)
			if proto == "" {
				proto = "TCP"
			}
			s.Ports = append(s.Ports, dns.Port{Name: p.Name, Protocol: proto, Port: uint16(p.Port)})
		}
		if s.Type == dns.Headless {
			s.Endpoints = eps[key{si.Namespace, si.Name}]
		} else {
			for _, a := range si.Spec.IPs {
				if ip, err := netip.ParseAddr(a); err == nil {
					s.IPs = append(s.IPs, ip)
				}
			}
		}
		services = append(services, s)
	}
	return dns.NewZone(services)
}
