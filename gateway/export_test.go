package gateway

// PrepareKernel is prepareKernel (tunnel filter tests).
var PrepareKernel = prepareKernel

// DroppedByTunnelFilter is droppedByTunnelFilter (the metrics' reading of nft's counters).
var DroppedByTunnelFilter = droppedByTunnelFilter

// SetPeerGateways is setPeerGateways (tunnel filter tests).
var SetPeerGateways = setPeerGateways

// SetTranslation is setTranslation (translation tests).
var SetTranslation = setTranslation
