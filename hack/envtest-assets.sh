#!/usr/bin/env bash
# Prepares KUBEBUILDER_ASSETS for envtest: kube-apiserver and kubectl built from source
# (hack/kube-binaries.sh) and Debian's etcd, in one directory. Prints that directory.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
"$here/apt-install.sh" etcd-server
bin="$("$here/kube-binaries.sh" kube-apiserver kubectl | tail -1)"
ln -sf "$(command -v etcd || echo /usr/bin/etcd)" "$bin/etcd"
echo "$bin"
