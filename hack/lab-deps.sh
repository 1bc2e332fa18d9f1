#!/usr/bin/env bash
# Installs and builds everything the lab runs, idempotently, and prints where it is as
# shell assignments (eval-able):
#   KUBE_BIN=...     kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy, kubectl
#   COREDNS_BIN=...  coredns
#   CNI_BIN=...      reference CNI plugins (ptp, bridge, host-local, loopback, portmap)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
"$here/apt-install.sh" etcd-server nftables iproute2 util-linux busybox socat dnsutils iputils-ping \
  netcat-openbsd procps openvswitch-switch ethtool iperf3 wireguard-go bird2 frr tcpdump
kube="$("$here/kube-binaries.sh" kube-apiserver kubectl kube-controller-manager kube-scheduler kube-proxy | tail -1)"
# Debian's etcd, found on PATH without $kube (where `weftctl lab env` puts it first: the link
# would otherwise point at itself).
etcd="$(PATH="$(tr ':' '\n' <<<"$PATH" | grep -vxF "$kube" | paste -sd:)" command -v etcd)"
ln -sf "$etcd" "$kube/etcd"
coredns="$("$here/module-binaries.sh" coredns github.com/coredns/coredns v1.15.0 github.com/coredns/coredns | tail -1)"
cni="$("$here/module-binaries.sh" cni-plugins github.com/containernetworking/plugins v1.9.1 \
  github.com/containernetworking/plugins/plugins/main/ptp \
  github.com/containernetworking/plugins/plugins/main/bridge \
  github.com/containernetworking/plugins/plugins/main/loopback \
  github.com/containernetworking/plugins/plugins/ipam/host-local \
  github.com/containernetworking/plugins/plugins/meta/portmap | tail -1)"
echo "KUBE_BIN=$kube"
echo "COREDNS_BIN=$coredns"
echo "CNI_BIN=$cni"
