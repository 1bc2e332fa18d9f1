package clusterpeer

import (
	"context"
	"errors"
	"fmt"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// peerInfo is what a peer advertises.
type peerInfo struct {
	KubernetesVersion string
	WeftVersion       string
	ClusterID         string
	PodCIDRs          []string
	ServiceCIDRs      []string
	Gateways          []fabricv1.GatewayStatus
	MaxActive         int32
	// PeerAliases is how the peer sees its peers (its status.peerAliases), this cluster
	// among them.
	PeerAliases []fabricv1.PeerAliases
}

// peerError is a classified failure to read a peer. Stalled failures need the user to change
// something (a credential, a spec); the others may heal by themselves.
type peerError struct {
	Reason  string
	Message string
	Stalled bool
}

func (e *peerError) Error() string { return e.Reason + ": " + e.Message }

func stalled(reason, format string, args ...any) *peerError {
	return &peerError{Reason: reason, Message: fmt.Sprintf(format, args...), Stalled: true}
}

func transient(reason, format string, args ...any) *peerError {
	return &peerError{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// Prober reads a peer's API server. It exists as a seam so tests can count or fail probes.
type Prober interface {
	Probe(ctx context.Context, cfg *rest.Config) (peerInfo, error)
}

// apiProber reads the peer's version and its ClusterNetwork. It keeps its clients per
// configuration (the reconciler keeps one per peer until the peer's Secret changes): a new
// client would discover the peer's API groups again, several requests at every probe.
type apiProber struct {
	scheme  *runtime.Scheme
	mu      sync.Mutex
	clients map[*rest.Config]*peerClients
}

type peerClients struct {
	dc *discovery.DiscoveryClient
	c  client.Client
}

func (p *apiProber) clientsFor(cfg *rest.Config) (*peerClients, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pc := p.clients[cfg]; pc != nil {
		return pc, nil
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, stalled(fabricv1.ReasonInvalidKubeconfig, "building a client: %v", err)
	}
	c, err := client.New(cfg, client.Options{Scheme: p.scheme})
	if err != nil {
		return nil, classify("building a client", err)
	}
	if p.clients == nil {
		p.clients = map[*rest.Config]*peerClients{}
	}
	pc := &peerClients{dc: dc, c: c}
	p.clients[cfg] = pc
	return pc, nil
}

// Forget drops the clients of a configuration no longer used.
func (p *apiProber) Forget(cfg *rest.Config) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.clients, cfg)
}

func (p *apiProber) Probe(ctx context.Context, cfg *rest.Config) (peerInfo, error) {
	pc, err := p.clientsFor(cfg)
	if err != nil {
		return peerInfo{}, err
	}
	v, err := pc.dc.ServerVersion()
	if err != nil {
		return peerInfo{}, classify("reading the peer's version", err)
	}
	c := pc.c
	cn := &fabricv1.ClusterNetwork{}
	if err := c.Get(ctx, types.NamespacedName{Name: fabricv1.ClusterNetworkName}, cn); err != nil {
		return peerInfo{KubernetesVersion: v.GitVersion}, classify("reading the peer's ClusterNetwork", err)
	}
	info := peerInfo{KubernetesVersion: v.GitVersion, WeftVersion: cn.Status.OperatorVersion, ClusterID: cn.Spec.ClusterID, Gateways: cn.Status.Gateways,
		MaxActive: cn.Spec.Gateways.MaxActive, PeerAliases: cn.Status.PeerAliases}
	for _, c := range cn.Spec.PodCIDRs {
		info.PodCIDRs = append(info.PodCIDRs, string(c))
	}
	for _, c := range cn.Spec.ServiceCIDRs {
		info.ServiceCIDRs = append(info.ServiceCIDRs, string(c))
	}
	return info, nil
}

// classify turns a client error into a condition reason with a message that says what to do.
func classify(doing string, err error) *peerError {
	var pe *peerError
	switch {
	case errors.As(err, &pe):
		return pe
	case apierrors.IsUnauthorized(err):
		return stalled(fabricv1.ReasonUnauthorized,
			"%s: the peer refused the credential (expired or revoked token?): %v", doing, err)
	case apierrors.IsForbidden(err):
		return stalled(fabricv1.ReasonForbidden,
			"%s: the credential lacks permission (re-run `weftctl peer join`): %v", doing, err)
	case meta.IsNoMatchError(err), apierrors.IsNotFound(err):
		return transient(fabricv1.ReasonPeerNotConfigured,
			"%s: weft is not installed or has no ClusterNetwork %q in the peer yet", doing, fabricv1.ClusterNetworkName)
	case apierrors.IsTimeout(err), apierrors.IsServerTimeout(err), apierrors.IsTooManyRequests(err),
		apierrors.IsServiceUnavailable(err), apierrors.IsInternalError(err):
		return transient(fabricv1.ReasonUnreachable, "%s: %v", doing, err)
	}
	if _, ok := err.(apierrors.APIStatus); ok {
		return transient(fabricv1.ReasonUnexpectedResponse, "%s: %v", doing, err)
	}
	// Anything else failed before an HTTP answer: DNS, TCP, TLS, timeouts.
	return transient(fabricv1.ReasonUnreachable, "%s: %v", doing, err)
}
