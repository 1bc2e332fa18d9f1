package lab

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/weft-net/weft/lab/netlab"
	"github.com/weft-net/weft/lab/proc"
	"github.com/weft-net/weft/lab/router"
)

// The BGP side of a lab cluster with a router: the router on the underlay, an external
// host behind it on a segment of its own, and the ASNs and password both ends use.
const (
	RouterASN   = 65000
	NodeASN     = 64512
	BGPPassword = "weft-lab-bgp"
	// BGPSecret holds the password in weft's namespace.
	BGPSecret = "weft-lab-bgp"
	// RouterFile is where a cluster's router configuration is kept (router.Config, JSON).
	RouterFile = "router.json"
)

// RouterIP is the router's underlay address in cluster i.
func (c ClusterLayout) RouterIP() netip.Addr {
	return netip.MustParseAddr(fmt.Sprintf("172.30.%d.254", c.Index))
}

// ExternalCIDR is the segment behind the router: the router is .1, the external host .10.
func (c ClusterLayout) ExternalCIDR() netip.Prefix {
	return netip.MustParsePrefix(fmt.Sprintf("192.168.%d.0/24", 100+c.Index))
}

// ExternalHost is the host behind the router.
func (c ClusterLayout) ExternalHost(prefix string) Host {
	b := c.ExternalCIDR().Addr().As4()
	b[3] = 10
	return Host{Name: c.Name + "-ext", Netns: prefix + c.Name + "-ext", IP: netip.AddrFrom4(b)}
}

// RouterHost is the router's namespace.
func (c ClusterLayout) RouterHost(prefix string) Host {
	return Host{Name: c.Name + "-router", Netns: prefix + c.Name + "-router", Port: fmt.Sprintf("c%dr", c.Index), IP: c.RouterIP()}
}

// RouterConfig is the router of a cluster whose kind is kind.
func (c ClusterLayout) RouterConfig(prefix, kind string) router.Config {
	rc := router.Config{Kind: kind, Dir: filepath.Join(c.Dir, "router"), Netns: c.RouterHost(prefix).Netns,
		ASN: RouterASN, RouterID: c.RouterIP(), Neighbors: netip.PrefixFrom(netip.MustParseAddr(fmt.Sprintf("172.30.%d.0", c.Index)), 24),
		NeighborASN: NodeASN, Password: BGPPassword, BFD: 100 * time.Millisecond, Announce: []netip.Prefix{c.ExternalCIDR()}}
	for _, n := range c.Nodes {
		rc.Peers = append(rc.Peers, n.IP)
	}
	return rc
}

// LoadRouter reads a running lab cluster's router configuration (tests query the router).
func LoadRouter(clusterDir string) (router.Config, error) {
	var rc router.Config
	b, err := os.ReadFile(filepath.Join(clusterDir, RouterFile))
	if err != nil {
		return rc, err
	}
	return rc, json.Unmarshal(b, &rc)
}

// routers starts each cluster's router and puts the external host behind it.
func (l *Lab) routers() error {
	for _, c := range l.layout.Clusters {
		kind := l.opts.Router(c.Index)
		if kind == "" {
			continue
		}
		if err := os.MkdirAll(LogDir(l.opts.StateDir, c.Name), 0o700); err != nil {
			return err
		}
		r, ext := c.RouterHost(l.layout.Prefix), c.ExternalHost(l.layout.Prefix)
		sw, err := netlab.NewSwitch(l.layout.Underlay) // (the one network() built)
		if err != nil {
			return err
		}
		for _, h := range []Host{r, ext} {
			if err := netlab.AddNetns(h.Netns); err != nil {
				return err
			}
		}
		if err := sw.Plug(r.Netns, r.Port, WithLength(r.IP)); err != nil {
			return err
		}
		if err := netlab.Sysctl(r.Netns, "net.ipv4.ip_forward", "1"); err != nil {
			return err
		}
		gw := netip.PrefixFrom(c.ExternalCIDR().Addr().Next(), c.ExternalCIDR().Bits())
		for _, args := range [][]string{
			{"-n", r.Netns, "link", "add", "ext0", "type", "veth", "peer", "name", "eth0", "netns", ext.Netns},
			{"-n", r.Netns, "addr", "add", gw.String(), "dev", "ext0"},
			{"-n", r.Netns, "link", "set", "ext0", "up"},
			{"-n", ext.Netns, "addr", "add", netip.PrefixFrom(ext.IP, 24).String(), "dev", "eth0"},
			{"-n", ext.Netns, "link", "set", "eth0", "up"},
			{"-n", ext.Netns, "link", "set", "lo", "up"},
			{"-n", ext.Netns, "route", "add", "default", "via", gw.Addr().String()},
		} {
			if err := netlab.IP(args...); err != nil {
				return err
			}
		}
		rc := c.RouterConfig(l.layout.Prefix, kind)
		procs, err := rc.Write()
		if err != nil {
			return err
		}
		for _, p := range procs {
			if err := l.sup.Start(proc.Spec{Name: c.Name + "/" + p.Name, Netns: r.Netns, Path: p.Path, Args: p.Args,
				Restart: true, LogPath: l.logPath(c, "router-"+p.Name)}); err != nil {
				return err
			}
			if p.Name != "bgpd" && p.Name != "bird" {
				time.Sleep(300 * time.Millisecond) // FRR's bgpd and bfdd connect to zebra on start
			}
		}
		b, _ := json.MarshalIndent(rc, "", "  ")
		if err := os.WriteFile(filepath.Join(c.Dir, RouterFile), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// bgpSpec is a router cluster's spec.bgp: every node peers with the router (password, BFD
// 100 ms, short timers), announces its pod block, the Service range and ServiceImport
// addresses, and installs what the router announces (the external host's segment).
func (c ClusterLayout) bgpSpec() string {
	return fmt.Sprintf(`  bgp:
    asn: %d
    import: true
    advertise: {podBlocks: true, serviceCIDRs: true, serviceImportVIPs: true}
    peers:
    - name: tor
      address: %s
      asn: %d
      holdTimeSeconds: 9
      keepaliveSeconds: 3
      bfd: {minIntervalMilliseconds: 100, multiplier: 3}
      passwordSecretRef: {name: %s, key: password}
`, NodeASN, c.RouterIP(), RouterASN, BGPSecret)
}
