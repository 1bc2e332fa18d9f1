// Package images is the one table of weft's container images: which programs each carries,
// which Debian packages it is built on, and its entrypoint. Everything that names or builds
// an image reads it: the Dockerfile (generated from it), the operator's default images, the
// OLM bundle's relatedImages and the lab kubelet's image table (which maps the same names to
// the binaries in bin/ and the host's copies of the packaged tools).
//
// It is not a build system: it pulls and pushes nothing.
package images

import (
	"fmt"
	"strings"
)

// Registry is where weft's images are published.
const Registry = "ghcr.io/weft-net"

// Base images, pinned: the Go toolchain this repository is built and tested with, and the
// Debian point release whose packages (versions below) the lab runs.
const (
	GoImage     = "docker.io/library/golang:1.26.8-bookworm"
	DebianImage = "docker.io/library/debian:12.11-slim"
)

// Package is a Debian package pinned to the version the lab is tested with, and the
// programs of it the image's code runs.
type Package struct {
	Name, Version string
	Programs      []string
}

// Image is one container image.
type Image struct {
	// Name is the repository under Registry.
	Name string
	// Commands are weft binaries (built from cmd/<name>);
	// the first is the entrypoint.
	Commands []string
	// Packages are installed from Debian; an image without packages is built FROM scratch.
	Packages []Package
	// Privileged images run on the host's network and change it (they are not run as a
	// non-root user).
	Privileged bool
	// Description says what runs it, for the bundle and the Dockerfile.
	Description string
}

var (
	openvswitchCommon = Package{Name: "openvswitch-common", Version: "3.1.0-2+deb12u1",
		Programs: []string{"ovs-vsctl", "ovs-ofctl", "ovs-appctl", "ovs-dpctl", "ovsdb-tool", "ovsdb-client"}}
	openvswitchSwitch = Package{Name: "openvswitch-switch", Version: "3.1.0-2+deb12u1",
		Programs: []string{"ovsdb-server", "ovs-vswitchd"}}
	nftables = Package{Name: "nftables", Version: "1.0.6-2+deb12u2", Programs: []string{"nft"}}
)

// All lists every image, in build order.
var All = []Image{
	{Name: "weft-operator", Commands: []string{"weft-operator"},
		Description: "the operator (Deployment): CRDs' controllers, node IPAM, peering, MCS, webhook"},
	{Name: "weft-agent", Commands: []string{"weft-agent", "weft-cni"}, Privileged: true,
		Packages:    []Package{openvswitchCommon, nftables},
		Description: "the node agent (DaemonSet on every node): datapath, CNI server; installs weft-cni"},
	{Name: "weft-ovs", Commands: []string{"weft-ovs"}, Privileged: true,
		Packages:    []Package{openvswitchCommon, openvswitchSwitch},
		Description: "Open vSwitch (userspace or kernel datapath) beside the agent on every node"},
	{Name: "weft-gateway", Commands: []string{"weft-gateway"}, Privileged: true,
		Packages:    []Package{nftables},
		Description: "a gateway (DaemonSet on gateway nodes): tunnels to peer clusters, health probes"},
	{Name: "weft-dns", Commands: []string{"weft-dns"},
		Description: "the clusterset.local DNS server (Deployment)"},
}

// Ref is an image's reference at a version ("0.1.0" or "v0.1.0" both give tag v0.1.0).
func Ref(name, version string) string {
	return fmt.Sprintf("%s/%s:v%s", Registry, name, strings.TrimPrefix(version, "v"))
}

// Get returns the image of that name.
func Get(name string) (Image, bool) {
	for _, im := range All {
		if im.Name == name {
			return im, true
		}
	}
	return Image{}, false
}

// Programs lists the packaged programs an image carries.
func (im Image) Programs() []string {
	var p []string
	for _, pkg := range im.Packages {
		p = append(p, pkg.Programs...)
	}
	return p
}

// Source is the Go package a weft binary is built from.
func Source(command string) string { return "./cmd/" + command }
