package ovs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/ovn-kubernetes/libovsdb/client"
	"github.com/vishvananda/netlink"
	"k8s.io/klog/v2"

	"github.com/weft-net/weft/agent/datapath/ovs/vswitch"
	"github.com/weft-net/weft/agent/datapath/veth"
)

// linkWithAddr returns the link that holds ip.

// adoptUplink gives the userspace datapath the node's uplink: the uplink becomes a port of
// the external bridge, and the node's addresses and routes move to the bridge's internal
// port (OVS's userspace tunnels send through there). Done once; later calls find the
// address on the bridge and only make sure the uplink is still its port.
func (d *Driver) adoptUplink(ctx context.Context, nodeIP netip.Addr) error {
	// Open vSwitch killed (no SIGTERM, so the uplink was not given back) and started again
	// makes a new bridge port without the node's addresses: put them back first.
	if br, err := netlink.LinkByName(d.extBridge); err == nil {
		if addrs := d.savedUplinkAddrs(); len(addrs) > 0 {
			if _, err := restoreUplink(&netlink.Handle{} /* this thread's namespace */, br, addrs, d.savedUplinkRoutes()); err != nil {
				return err
			}
		}
	}
	link, err := veth.LinkWithAddr(nodeIP)
	if err != nil {
		return err
	}
	if link.Attrs().Name == d.extBridge {
		// Adopted before (by this agent or the last): its routes are on record. An agent
		// older than the record leaves none: what the bridge has now is recorded.
		d.uplinkRoutes = d.savedUplinkRoutes()
		if len(d.uplinkRoutes) == 0 {
			routes, err := netlink.RouteList(link, netlink.FAMILY_ALL)
			if err != nil {
				return err
			}
			d.uplinkRoutes = gatewayRoutes(routes)
			if err := d.db.setExternalID(ctx, d.extBridge, idUplinkRoutes, d.uplinkRoutes); err != nil {
				return err
			}
		}
		d.uplinkAddrs = d.savedUplinkAddrs()
		if len(d.uplinkAddrs) == 0 {
			addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
			if err != nil {
				return err
			}
			if err := d.recordUplinkAddrs(ctx, addrs); err != nil {
				return err
			}
		}
		_, err := restoreRoutes(&netlink.Handle{} /* this thread's namespace */, link, d.uplinkRoutes)
		return err
	}
	uplink := link.Attrs().Name
	if err := d.db.ensureBridge(ctx, d.extBridge, d.datapathType, vswitch.BridgeFailModeStandalone); err != nil {
		return fmt.Errorf("bridge %s: %w", d.extBridge, err)
	}
	if err := d.db.ensurePort(ctx, portSpec{Bridge: d.extBridge, Name: uplink,
		ExternalIDs: map[string]string{"weft-role": "uplink"}}); err != nil {
		return fmt.Errorf("uplink port %s: %w", uplink, err)
	}
	if err := d.db.waitOFPort(ctx, uplink); err != nil {
		return err
	}
	br, err := waitLink(ctx, d.extBridge)
	if err != nil {
		return err
	}
	if err := netlink.LinkSetMTU(br, link.Attrs().MTU); err != nil {
		return err
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return err
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return err
	}
	routes, err := netlink.RouteList(link, netlink.FAMILY_ALL)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		if a.Scope != int(netlink.SCOPE_UNIVERSE) {
			continue
		}
		moved := &netlink.Addr{IPNet: a.IPNet}
		if err := netlink.AddrReplace(br, moved); err != nil {
			return fmt.Errorf("moving %s to %s: %w", a.IPNet, d.extBridge, err)
		}
	}
	moved := gatewayRoutes(routes)
	// On record first: an agent that dies midway finds them on the next start.
	if err := d.db.setExternalID(ctx, d.extBridge, idUplinkRoutes, moved); err != nil {
		return err
	}
	d.uplinkRoutes = moved
	if err := d.recordUplinkAddrs(ctx, addrs); err != nil {
		return err
	}
	for _, r := range routes {
		if !throughGateway(r) {
			continue
		}
		r.LinkIndex = br.Attrs().Index
		if err := netlink.RouteReplace(&r); err != nil {
			return fmt.Errorf("moving route %s to %s: %w", r, d.extBridge, err)
		}
	}
	for _, a := range addrs {
		if a.Scope == int(netlink.SCOPE_UNIVERSE) {
			_ = netlink.AddrDel(link, &netlink.Addr{IPNet: a.IPNet})
		}
	}
	return nil
}

// idUplinkRoutes records, on the external bridge, the routes taken from the uplink;
// idUplinkAddrs the addresses (CIDR notation).
const (
	idUplinkRoutes = "weft-uplink-routes"
	idUplinkAddrs  = "weft-uplink-addrs"
)

// recordUplinkAddrs records the node's global addresses (those moved to the bridge).
func (d *Driver) recordUplinkAddrs(ctx context.Context, addrs []netlink.Addr) error {
	var out []string
	for _, a := range addrs {
		if a.Scope == int(netlink.SCOPE_UNIVERSE) {
			out = append(out, a.IPNet.String())
		}
	}
	if err := d.db.setExternalID(ctx, d.extBridge, idUplinkAddrs, out); err != nil {
		return err
	}
	d.uplinkAddrs = out
	return nil
}

func (d *Driver) savedUplinkAddrs() []string {
	var out []string
	if br, err := d.db.bridge(d.extBridge); err == nil {
		_ = json.Unmarshal([]byte(br.ExternalIDs[idUplinkAddrs]), &out)
	}
	return out
}

// restoreUplink makes the bridge's port what adopting the uplink made it — up, with the
// node's addresses and routes — if it lacks any of that (Open vSwitch killed and started
// again, without giving the uplink back, makes a new port with none). It returns how many
// addresses and routes it put back.
func restoreUplink(h *netlink.Handle, br netlink.Link, addrs []string, routes []uplinkRoute) (int, error) {
	if len(addrs) == 0 {
		return restoreRoutes(h, br, routes)
	}
	// Every link's addresses: where another link holds the node's addresses (the uplink,
	// given back; a node whose network was set up again) the bridge is not where they live,
	// and nothing is restored.
	have, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return 0, err
	}
	var missing []*net.IPNet
	for _, a := range addrs {
		ipn, err := netlink.ParseIPNet(a)
		if err != nil {
			continue
		}
		found := false
		for _, cur := range have {
			if cur.IPNet.String() == ipn.String() {
				if cur.LinkIndex != br.Attrs().Index {
					return 0, nil
				}
				found = true
			}
		}
		if !found {
			missing = append(missing, ipn)
		}
	}
	if br.Attrs().Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(br); err != nil {
			return 0, err
		}
	}
	restored := 0
	for _, ipn := range missing {
		if err := h.AddrReplace(br, &netlink.Addr{IPNet: ipn}); err != nil {
			return restored, fmt.Errorf("restoring %s on %s: %w", ipn, br.Attrs().Name, err)
		}
		restored++
	}
	n, err := restoreRoutes(h, br, routes)
	return restored + n, err
}

// RestoreUplink is restoreUplink for weft-ovs starting: from what the database records
// (nothing to do when it records no adopted uplink), once the bridge's port exists — up
// to ctx's end.
func RestoreUplink(ctx context.Context, endpoint string) (int, error) {
	db, err := connectOVSDB(ctx, endpoint)
	if err != nil {
		return 0, err
	}
	defer db.close()
	br, err := db.bridge(ExternalBridge)
	if err != nil {
		if errors.Is(err, client.ErrNotFound) {
			return 0, nil
		}
		return 0, err
	}
	var addrs []string
	var routes []uplinkRoute
	_ = json.Unmarshal([]byte(br.ExternalIDs[idUplinkAddrs]), &addrs)
	_ = json.Unmarshal([]byte(br.ExternalIDs[idUplinkRoutes]), &routes)
	if len(addrs) == 0 {
		return 0, nil
	}
	for {
		link, err := netlink.LinkByName(ExternalBridge)
		if err == nil {
			return restoreUplink(&netlink.Handle{} /* this thread's namespace */, link, addrs, routes)
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("waiting for %s: %w", ExternalBridge, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// uplinkRoute is a route (through a gateway) the node had on its uplink.
type uplinkRoute struct {
	Dst      string `json:"dst,omitempty"` // "" for the default route
	Gw       string `json:"gw"`
	Priority int    `json:"priority,omitempty"`
	Table    int    `json:"table,omitempty"`
	Family   int    `json:"family,omitempty"`
}

// gatewayRoutes are the routes through a gateway among routes (those an address does not
// bring back).
func gatewayRoutes(routes []netlink.Route) []uplinkRoute {
	var out []uplinkRoute
	for _, r := range routes {
		if !throughGateway(r) {
			continue
		}
		ur := uplinkRoute{Gw: r.Gw.String(), Priority: r.Priority, Table: r.Table, Family: r.Family}
		if r.Dst != nil {
			ur.Dst = r.Dst.String()
		}
		out = append(out, ur)
	}
	return out
}

// throughGateway says whether a route goes through a gateway and is not one the kernel adds
// with an address.
func throughGateway(r netlink.Route) bool {
	return r.Protocol != netlink.RouteProtocol(2) /* kernel */ && r.Gw != nil
}

func (d *Driver) savedUplinkRoutes() []uplinkRoute {
	var out []uplinkRoute
	if br, err := d.db.bridge(d.extBridge); err == nil {
		_ = json.Unmarshal([]byte(br.ExternalIDs[idUplinkRoutes]), &out)
	}
	return out
}

// restoreRoutes puts back on link (the bridge's port while the uplink is adopted, the uplink
// when it is released) those of the uplink's routes it lacks: the kernel drops a device's
// routes through gateways when the device goes down, and userspace Open vSwitch may take
// its internal port down and up. It returns how many it restored.
func restoreRoutes(h *netlink.Handle, br netlink.Link, routes []uplinkRoute) (int, error) {
	have, err := h.RouteList(br, netlink.FAMILY_ALL)
	if err != nil {
		return 0, err
	}
	restored := 0
	for _, ur := range routes {
		gw := net.ParseIP(ur.Gw)
		r := netlink.Route{LinkIndex: br.Attrs().Index, Gw: gw, Priority: ur.Priority, Table: ur.Table, Family: ur.Family}
		if ur.Dst != "" {
			_, dst, err := net.ParseCIDR(ur.Dst)
			if err != nil {
				continue
			}
			r.Dst = dst
		}
		found := false
		for _, cur := range have {
			if cur.Gw.Equal(gw) && (cur.Dst == nil) == (r.Dst == nil) && (cur.Dst == nil || cur.Dst.String() == r.Dst.String()) {
				found = true
				break
			}
		}
		if found {
			continue
		}
		if err := h.RouteReplace(&r); err != nil {
			return restored, fmt.Errorf("restoring route %s to %s: %w", r, br.Attrs().Name, err)
		}
		restored++
	}
	return restored, nil
}

// keepUplinkRoutes restores the uplink's addresses and routes on the bridge whenever they go missing,
// until ctx ends, through h (opened in the node's network namespace).
func (d *Driver) keepUplinkRoutes(ctx context.Context, h *netlink.Handle) {
	defer h.Close()
	log := klog.FromContext(ctx)
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		br, err := h.LinkByName(d.extBridge)
		if err != nil {
			continue
		}
		d.mu.Lock()
		addrs, routes := d.uplinkAddrs, d.uplinkRoutes
		d.mu.Unlock()
		if n, err := restoreUplink(h, br, addrs, routes); err != nil {
			log.Error(err, "keeping the node's addresses and routes on the external bridge")
		} else if n > 0 {
			log.Info("restored the node's addresses and routes on the external bridge (its port went down and up, or Open vSwitch restarted)",
				"bridge", d.extBridge, "restored", n)
		}
	}
}

func waitLink(ctx context.Context, name string) (netlink.Link, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		if l, err := netlink.LinkByName(name); err == nil {
			return l, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("interface %s did not appear", name)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ReleaseUplink undoes the adoption of the node's uplink for good: the uplink leaves the
// external bridge and takes back the node's addresses and its routes (those on record).
// weft-ovs calls it when it stops: once ovs-vswitchd exits, the userspace datapath forwards
// nothing, and a node whose uplink stayed in the bridge would be cut off (uninstalled, or
// until the next agent adopts the uplink again). It must run in the node's network namespace
// while OVSDB is still up, and returns the uplink's name ("" when none was adopted).
func ReleaseUplink(ctx context.Context, endpoint string) (string, error) {
	db, err := connectOVSDB(ctx, endpoint)
	if err != nil {
		return "", err
	}
	defer db.close()
	br, err := db.bridge(ExternalBridge)
	if err != nil {
		if errors.Is(err, client.ErrNotFound) {
			return "", nil
		}
		return "", err
	}
	var uplink string
	for _, uuid := range br.Ports {
		p := &vswitch.Port{UUID: uuid}
		if err := db.c.Get(ctx, p); err == nil && p.ExternalIDs["weft-role"] == "uplink" {
			uplink = p.Name
		}
	}
	if uplink == "" {
		return "", nil
	}
	var routes []uplinkRoute
	_ = json.Unmarshal([]byte(br.ExternalIDs[idUplinkRoutes]), &routes)
	link, err := netlink.LinkByName(uplink)
	if err != nil {
		return uplink, err
	}
	brLink, err := netlink.LinkByName(ExternalBridge)
	if err != nil {
		return uplink, err
	}
	addrs, err := netlink.AddrList(brLink, netlink.FAMILY_ALL)
	if err != nil {
		return uplink, err
	}
	// Out of the bridge first, so the userspace datapath lets go of the device.
	if err := db.deletePort(ctx, ExternalBridge, uplink); err != nil {
		return uplink, fmt.Errorf("taking %s out of %s: %w", uplink, ExternalBridge, err)
	}
	// The bridge no longer holds the node's addresses: nothing restores them there.
	if err := db.setExternalID(ctx, ExternalBridge, idUplinkAddrs, []string{}); err != nil {
		return uplink, err
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return uplink, err
	}
	for _, a := range addrs {
		if a.Scope != int(netlink.SCOPE_UNIVERSE) {
			continue
		}
		if err := netlink.AddrReplace(link, &netlink.Addr{IPNet: a.IPNet}); err != nil {
			return uplink, fmt.Errorf("moving %s back to %s: %w", a.IPNet, uplink, err)
		}
		_ = netlink.AddrDel(brLink, &netlink.Addr{IPNet: a.IPNet})
	}
	if _, err := restoreRoutes(&netlink.Handle{} /* this thread's namespace */, link, routes); err != nil {
		return uplink, err
	}
	return uplink, nil
}
