package gateway

// PrepareKernel is prepareKernel (tunnel filter tests).
var PrepareKernel = prepareKernel
