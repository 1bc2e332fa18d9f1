package ebpf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"reflect"
	"sort"

	"github.com/vishvananda/netlink"

	"github.com/weft-net/weft/agent/datapath"
	"github.com/weft-net/weft/agent/datapath/veth"
)

func (d *Driver) pair(pod datapath.Pod) veth.Pair {
	return veth.Pair{Host: veth.HostIfName(pod.Key), Peer: pod.Key.IfName, Netns: pod.Netns, IP: pod.IPs[0],
		Gateway: d.gwIP, MAC: veth.PodMAC(pod.IPs[0].Addr()), MTU: d.mtu, HostARP: true}
}

func (d *Driver) result(pod datapath.Pod) datapath.PodResult {
	return datapath.PodResult{HostInterface: veth.HostIfName(pod.Key), Interface: pod.Key.IfName, MAC: veth.PodMAC(pod.IPs[0].Addr()),
		MTU: d.mtu, IPs: pod.IPs, Gateways: []netip.Addr{d.gwIP}}
}

// AddPod wires a pod: its veth, proxy ARP and a host route on the node's end, its entry in
// the endpoint map and the program on its veth. All or nothing.
func (d *Driver) AddPod(ctx context.Context, pod datapath.Pod) (_ datapath.PodResult, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return datapath.PodResult{}, errors.New("the datapath is not initialized")
	}
	if len(pod.IPs) != 1 || !pod.IPs[0].Addr().Is4() || !d.block.Contains(pod.IPs[0].Addr()) {
		return datapath.PodResult{}, fmt.Errorf("pod %s/%s: want one IPv4 address in %s, got %v", pod.Namespace, pod.Name, d.block, pod.IPs)
	}
	if have, ok := d.pods[pod.Key]; ok {
		if reflect.DeepEqual(have, pod) && d.pair(pod).Check() == nil {
			return d.result(pod), nil
		}
		if err := d.delPod(pod.Key); err != nil {
			return datapath.PodResult{}, err
		}
	}
	pi := d.pair(pod)
	if err := pi.Create(); err != nil {
		return datapath.PodResult{}, err
	}
	defer func() {
		if err != nil {
			_ = d.delPod(pod.Key)
			_ = pi.Delete()
		}
	}()
	host, err := netlink.LinkByName(pi.Host)
	if err != nil {
		return datapath.PodResult{}, err
	}
	// The node answers the pod's ARP for the other addresses of its block (proxy ARP), at
	// once, and routes to the pod through this end.
	for _, s := range []struct{ path, val string }{
		{"/proc/sys/net/ipv4/conf/" + pi.Host + "/proxy_arp", "1"},
		{"/proc/sys/net/ipv4/neigh/" + pi.Host + "/proxy_delay", "0"},
	} {
		if err := os.WriteFile(s.path, []byte(s.val), 0o644); err != nil {
			return datapath.PodResult{}, fmt.Errorf("sysctl %s: %w", s.path, err)
		}
	}
	ip := pod.IPs[0].Addr()
	if err := netlink.RouteReplace(&netlink.Route{LinkIndex: host.Attrs().Index, Dst: veth.IPNet(netip.PrefixFrom(ip, 32)),
		Src: d.gwIP.AsSlice(), Scope: netlink.SCOPE_LINK, Protocol: routeProtocol}); err != nil {
		return datapath.PodResult{}, fmt.Errorf("route to %s: %w", ip, err)
	}
	if err := d.putEndpoint(pod, host); err != nil {
		return datapath.PodResult{}, err
	}
	if err := d.attachPod(pi.Host, host.Attrs().Index); err != nil {
		return datapath.PodResult{}, err
	}
	d.pods[pod.Key] = pod
	if err := d.saveState(); err != nil {
		return datapath.PodResult{}, err
	}
	return d.result(pod), nil
}

// putEndpoint writes a pod's entry in the endpoints map (its veth's node side is host).
func (d *Driver) putEndpoint(pod datapath.Pod, host netlink.Link) error {
	ip := pod.IPs[0].Addr()
	mac, _ := net.ParseMAC(veth.PodMAC(ip))
	ep := weftEndpoint{Ifindex: uint32(host.Attrs().Index)}
	copy(ep.PodMac[:], mac)
	copy(ep.HostMac[:], host.Attrs().HardwareAddr)
	if err := d.objs.Endpoints.Put(ip.As4(), ep); err != nil {
		return fmt.Errorf("endpoint %s: %w", ip, err)
	}
	return nil
}

// DelPod removes what AddPod made; a pod that does not exist is no error.
func (d *Driver) DelPod(_ context.Context, key datapath.PodKey) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return errors.New("the datapath is not initialized")
	}
	if err := d.delPod(key); err != nil {
		return err
	}
	return (veth.Pair{Host: veth.HostIfName(key)}).Delete()
}

func (d *Driver) delPod(key datapath.PodKey) error {
	pod, ok := d.pods[key]
	d.detach(veth.HostIfName(key))
	if !ok {
		return nil
	}
	for _, ip := range pod.IPs {
		if ip.Addr().Is4() {
			if err := d.objs.Endpoints.Delete(ip.Addr().As4()); err != nil && !errors.Is(err, os.ErrNotExist) && !isNotExist(err) {
				return fmt.Errorf("endpoint %s: %w", ip.Addr(), err)
			}
		}
	}
	delete(d.pods, key)
	return d.saveState()
}

// CheckPod reports whether the pod is wired as specified.
func (d *Driver) CheckPod(_ context.Context, pod datapath.Pod) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	have, ok := d.pods[pod.Key]
	if !ok {
		return fmt.Errorf("pod %s is not wired", pod.Key)
	}
	if !reflect.DeepEqual(have.IPs, pod.IPs) {
		return fmt.Errorf("pod %s has %v, not %v", pod.Key, have.IPs, pod.IPs)
	}
	var ep weftEndpoint
	if err := d.objs.Endpoints.Lookup(pod.IPs[0].Addr().As4(), &ep); err != nil {
		return fmt.Errorf("pod %s has no endpoint entry: %w", pod.Key, err)
	}
	return d.pair(pod).Check()
}

// Pods lists the pods the driver holds.
func (d *Driver) Pods(context.Context) ([]datapath.Pod, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]datapath.Pod, 0, len(d.pods))
	for _, p := range d.pods {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key.String() < out[j].Key.String() })
	return out, nil
}

// SetPolicy enforces a policy in the programs' maps, switched to in one step; connections
// already allowed keep going. A pod direction with more rules than the programs hold
// (policy.MaxFlatRules) refuses the whole policy (datapath.ErrPolicyUnsupported).
func (d *Driver) SetPolicy(_ context.Context, p datapath.Policy) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return errors.New("the datapath is not initialized")
	}
	return d.setPolicy(p)
}
