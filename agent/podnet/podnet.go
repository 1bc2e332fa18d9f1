// Package podnet is what the CNI commands do on a node: allocate addresses (ipam), wire the
// pod (datapath), undo both, check them, and put them back in line with the pods really on
// the node. It implements cniserver.Handler.
package podnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	corev1 "k8s.io/api/core/v1"

	"github.com/weft-net/weft/agent/cniproto"
	"github.com/weft-net/weft/agent/cniserver"
	"github.com/weft-net/weft/agent/datapath"
	"github.com/weft-net/weft/agent/ipam"
	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// Handler serves CNI commands.
type Handler struct {
	IPAM     *ipam.Allocator
	Datapath datapath.Datapath
	// Pod reads a pod (for its fixed-address annotation); nil means no lookups.
	Pod func(ctx context.Context, namespace, name string) (*corev1.Pod, error)
	// Ready says whether ADD can be served now (nil: ready).
	Ready func() error
	// Wired runs after a pod is wired and before ADD answers (the agent applies the pod's
	// policy then, so its containers never start unprotected). An error undoes the ADD.
	Wired func(ctx context.Context) error
}

var _ cniserver.Handler = (*Handler)(nil)

func owner(c cniserver.Call) ipam.Owner {
	return ipam.Owner{ContainerID: c.ContainerID, IfName: c.IfName, PodNamespace: c.PodNamespace, PodName: c.PodName, PodUID: c.PodUID}
}

func key(c cniserver.Call) datapath.PodKey {
	return datapath.PodKey{ContainerID: c.ContainerID, IfName: c.IfName}
}

// Add allocates the pod's addresses and wires it; on failure nothing is held.
func (h *Handler) Add(ctx context.Context, c cniserver.Call) (*current.Result, error) {
	if err := h.Status(ctx); err != nil {
		return nil, err
	}
	want, err := h.fixedAddress(ctx, c)
	if err != nil {
		return nil, err
	}
	ips, err := h.IPAM.Allocate(owner(c), want)
	if err != nil {
		return nil, ipamError(err)
	}
	res, err := h.Datapath.AddPod(ctx, datapath.Pod{Key: key(c), Namespace: c.PodNamespace, Name: c.PodName,
		UID: c.PodUID, Netns: c.Netns, IPs: ips})
	if err != nil {
		_, _ = h.IPAM.Release(owner(c))
		return nil, fmt.Errorf("wiring pod %s/%s: %w", c.PodNamespace, c.PodName, err)
	}
	if h.Wired != nil {
		if err := h.Wired(ctx); err != nil {
			_ = h.Datapath.DelPod(context.WithoutCancel(ctx), key(c))
			_, _ = h.IPAM.Release(owner(c))
			return nil, &cniproto.Error{Code: cniproto.CodeTryAgainLater,
				Msg: fmt.Sprintf("the network policy of pod %s/%s could not be applied", c.PodNamespace, c.PodName), Details: err.Error()}
		}
	}
	return result(c, res), nil
}

func (h *Handler) fixedAddress(ctx context.Context, c cniserver.Call) (netip.Addr, error) {
	if h.Pod == nil {
		return netip.Addr{}, nil
	}
	pod, err := h.Pod(ctx, c.PodNamespace, c.PodName)
	if err != nil || pod.Annotations[fabricv1.AnnotationPodIP] == "" {
		return netip.Addr{}, nil //nolint:nilerr // no pod object, no fixed address: allocate normally
	}
	want, err := netip.ParseAddr(pod.Annotations[fabricv1.AnnotationPodIP])
	if err != nil {
		return netip.Addr{}, &cniproto.Error{Code: cniproto.CodeAddressUnavailable,
			Msg: fmt.Sprintf("annotation %s of pod %s/%s is not an IP address", fabricv1.AnnotationPodIP, c.PodNamespace, c.PodName), Details: err.Error()}
	}
	return want, nil
}

func ipamError(err error) error {
	switch {
	case errors.Is(err, ipam.ErrExhausted):
		return &cniproto.Error{Code: cniproto.CodeNoAddress, Msg: "no free pod address on this node", Details: err.Error()}
	case errors.Is(err, ipam.ErrInUse), errors.Is(err, ipam.ErrOutside), errors.Is(err, ipam.ErrReserved):
		return &cniproto.Error{Code: cniproto.CodeAddressUnavailable, Msg: "the requested pod address cannot be given", Details: err.Error()}
	case errors.Is(err, ipam.ErrNoBlocks):
		return &cniproto.Error{Code: cniproto.CodeTryAgainLater, Msg: "this node has no pod block yet", Details: err.Error()}
	}
	return err
}

func result(c cniserver.Call, r datapath.PodResult) *current.Result {
	mac := r.MAC
	res := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: r.HostInterface},
			{Name: r.Interface, Mac: mac, Mtu: r.MTU, Sandbox: c.Netns},
		},
	}
	for i, ip := range r.IPs {
		ipc := &current.IPConfig{Interface: current.Int(1), Address: *ipNet(ip)}
		if i < len(r.Gateways) {
			ipc.Gateway = r.Gateways[i].AsSlice()
			res.Routes = append(res.Routes, &types.Route{Dst: net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}, GW: ipc.Gateway})
		}
		res.IPs = append(res.IPs, ipc)
	}
	return res
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// Del unwires the pod, then releases its addresses (never the other way round: an address
// still wired must not be handed out again). Deleting what is gone is no error.
func (h *Handler) Del(ctx context.Context, c cniserver.Call) error {
	if err := h.Datapath.DelPod(ctx, key(c)); err != nil {
		return fmt.Errorf("unwiring %s: %w", key(c), err)
	}
	_, err := h.IPAM.Release(owner(c))
	return err
}

// Check verifies the allocation, the wiring, and the runtime's prevResult against them.
func (h *Handler) Check(ctx context.Context, c cniserver.Call) error {
	var ips []netip.Prefix
	allocs, err := h.IPAM.Allocations()
	if err != nil {
		return err
	}
	for _, a := range allocs {
		if a.Owner.ContainerID == c.ContainerID && a.Owner.IfName == c.IfName {
			for _, b := range h.IPAM.Blocks() {
				if b.Contains(a.IP) {
					ips = append(ips, netip.PrefixFrom(a.IP, b.Bits()))
				}
			}
		}
	}
	if len(ips) == 0 {
		return &cniproto.Error{Code: cniproto.CodeUnknownContainer, Msg: "no address is allocated to " + key(c).String()}
	}
	if c.PrevResult != nil {
		for _, p := range c.PrevResult.IPs {
			found := false
			for _, ip := range ips {
				found = found || p.Address.String() == ip.String()
			}
			if !found {
				return fmt.Errorf("prevResult has %s, which is not allocated to %s", p.Address.String(), key(c))
			}
		}
	}
	return h.Datapath.CheckPod(ctx, datapath.Pod{Key: key(c), Namespace: c.PodNamespace, Name: c.PodName, Netns: c.Netns, IPs: ips})
}

// Status reports readiness for ADD.
func (h *Handler) Status(context.Context) error {
	if h.Ready == nil {
		return nil
	}
	if err := h.Ready(); err != nil {
		return &cniproto.Error{Code: cniproto.CodePluginNotAvailable, Msg: "weft-agent is not ready", Details: err.Error()}
	}
	return nil
}

// GC releases every attachment the runtime no longer knows.
func (h *Handler) GC(ctx context.Context, valid []types.GCAttachment) error {
	keep := map[datapath.PodKey]bool{}
	for _, v := range valid {
		keep[datapath.PodKey{ContainerID: v.ContainerID, IfName: v.IfName}] = true
	}
	return h.releaseUnless(ctx, func(k datapath.PodKey, _ string) bool { return keep[k] })
}

// Reconcile brings the node in line with the pods really on it (by UID): wiring and
// addresses of pods that are gone are released, and so are those of sandboxes whose network
// namespace is gone (a node or runtime restart: the pod lives on in a new sandbox), claims a
// crash left half-done are freed, and a wired pod whose address record was lost gets it back.
func (h *Handler) Reconcile(ctx context.Context, live []corev1.Pod) error {
	uids := map[string]bool{}
	for _, p := range live {
		uids[string(p.UID)] = true
	}
	pods, err := h.Datapath.Pods(ctx)
	if err != nil {
		return err
	}
	dead := map[datapath.PodKey]bool{}
	for _, p := range pods {
		if SandboxGone(p.Netns) {
			dead[p.Key] = true
		}
	}
	keep := func(k datapath.PodKey, uid string) bool { return uids[uid] && !dead[k] }
	for _, p := range pods {
		for _, ip := range p.IPs {
			if keep(p.Key, p.UID) {
				if err := h.IPAM.Restore(ip.Addr(), ipam.Owner{ContainerID: p.Key.ContainerID, IfName: p.Key.IfName,
					PodNamespace: p.Namespace, PodName: p.Name, PodUID: p.UID}); err != nil {
					return err
				}
			}
		}
	}
	return h.releaseUnless(ctx, keep)
}

// SandboxGone tells whether a sandbox's network namespace is known to be gone: its path is
// missing while the directory holding it is visible (a path the agent cannot see, such as
// another process's /proc entry without the host's PID namespace, proves nothing).
func SandboxGone(netns string) bool {
	if netns == "" {
		return false
	}
	if _, err := os.Stat(filepath.Dir(netns)); err != nil {
		return false
	}
	_, err := os.Stat(netns)
	return errors.Is(err, os.ErrNotExist)
}

// releaseUnless unwires and frees every attachment for which keep is false.
func (h *Handler) releaseUnless(ctx context.Context, keep func(k datapath.PodKey, uid string) bool) error {
	pods, err := h.Datapath.Pods(ctx)
	if err != nil {
		return err
	}
	var errs []error
	wired := map[netip.Addr]bool{}
	for _, p := range pods {
		if keep(p.Key, p.UID) {
			for _, ip := range p.IPs {
				wired[ip.Addr()] = true
			}
			continue
		}
		if err := h.Datapath.DelPod(ctx, p.Key); err != nil {
			errs = append(errs, err)
		}
	}
	allocs, err := h.IPAM.Allocations()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, a := range allocs {
		k := datapath.PodKey{ContainerID: a.Owner.ContainerID, IfName: a.Owner.IfName}
		if wired[a.IP] || (a.Owner.ContainerID != "" && keep(k, a.Owner.PodUID)) {
			continue
		}
		if err := h.IPAM.ReleaseIP(a.IP); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
