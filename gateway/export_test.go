package gateway

import "net/netip"

// PrepareKernel is prepareKernel (tunnel filter tests).
var PrepareKernel = prepareKernel

// DroppedByTunnelFilter is droppedByTunnelFilter (the metrics' reading of nft's counters).
var DroppedByTunnelFilter = droppedByTunnelFilter

// SetPeerGateways is setPeerGateways (tunnel filter tests).
var SetPeerGateways = setPeerGateways

// SetTranslation is setTranslation (translation tests).
var SetTranslation = setTranslation

// Answers is whether a gateway, ready or not, with these peer gateways answers a health
// probe from the address.
func Answers(ready bool, peerGateways []netip.Addr, from netip.Addr) bool {
	g := &gw{}
	g.ready.Store(ready)
	m := map[netip.Addr]bool{}
	for _, a := range peerGateways {
		m[a] = true
	}
	g.peerGateways.Store(&m)
	return g.answers(from)
}

// StaticMapper is staticMapper (the gateway's clients without discovery).
var StaticMapper = staticMapper
