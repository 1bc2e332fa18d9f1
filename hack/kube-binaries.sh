#!/usr/bin/env bash
# Builds Kubernetes binaries from k8s.io/kubernetes through the Go module proxy into a cache
# directory, once per version. Used by envtest (kube-apiserver) and by the lab (everything).
#
#   hack/kube-binaries.sh [component ...]     default: kube-apiserver kubectl
#
# Output: $WEFT_CACHE/k8s/$KUBE_VERSION/bin/<component>; prints that bin dir on the last line.
# A component is rebuilt only when its `--version` output no longer matches KUBE_VERSION.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.37.2}"
WEFT_CACHE="${WEFT_CACHE:-$HOME/.cache/weft}"
STAGING_VERSION="v0.${KUBE_VERSION#v1.}"
BIN="$WEFT_CACHE/k8s/$KUBE_VERSION/bin"
MOD="$WEFT_CACHE/k8s/$KUBE_VERSION/build"

components=("$@")
[ ${#components[@]} -gt 0 ] || components=(kube-apiserver kubectl)

has_version() { # component
  local out
  [ -x "$BIN/$1" ] || return 1
  out="$("$BIN/$1" --version 2>/dev/null || "$BIN/$1" version --client 2>/dev/null || true)"
  [[ "$out" == *"$KUBE_VERSION"* ]]
}

todo=()
for c in "${components[@]}"; do has_version "$c" || todo+=("$c"); done
if [ ${#todo[@]} -eq 0 ]; then echo "$BIN"; exit 0; fi

mkdir -p "$BIN" "$MOD"
export GOFLAGS="-mod=mod -buildvcs=false" GONOSUMDB="k8s.io" GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

if [ ! -f "$MOD/go.mod" ] || ! grep -q "k8s.io/kubernetes $KUBE_VERSION" "$MOD/go.mod"; then
  echo ">> preparing build module for kubernetes $KUBE_VERSION in $MOD" >&2
  rm -f "$MOD/go.mod" "$MOD/go.sum"
  kmod="$(cd "$MOD" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  {
    echo "module weft.local/kubebuild"
    echo
    echo "go 1.25"
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    # every module kubernetes replaces with ./staging/... is served at the matching v0 version
    grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging' "$kmod" | awk '{print $1}' | grep -v 'sample-' |
      sort -u | while read -r m; do echo "replace $m => $m $STAGING_VERSION"; done
  } >"$MOD/go.mod"
fi

{
  echo "//go:build tools"
  echo "package kubebuild"
  echo "import ("
  for c in "${components[@]}"; do echo "  _ \"k8s.io/kubernetes/cmd/$c\""; done
  echo ")"
} >"$MOD/tools.go"

ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION \
-X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$KUBE_VERSION" | cut -d. -f2) \
-X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION \
-X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$(echo "$KUBE_VERSION" | cut -d. -f2)"
cd "$MOD"
go mod tidy >&2 2>&1 || true
for c in "${todo[@]}"; do
  echo ">> building $c $KUBE_VERSION (first time takes minutes)" >&2
  start=$(date +%s)
  go build -trimpath -tags tools -ldflags "$ldflags" -o "$BIN/$c.tmp" "k8s.io/kubernetes/cmd/$c" >&2
  mv "$BIN/$c.tmp" "$BIN/$c"
  echo ">> built $c in $(( $(date +%s) - start ))s" >&2
done
echo "$BIN"
