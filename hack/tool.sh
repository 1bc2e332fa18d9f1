#!/usr/bin/env bash
# Installs a pinned Go tool into the cache once and prints its path:
#   hack/tool.sh controller-gen      -> $WEFT_CACHE/bin/controller-gen-v0.23.0
# Versions live here, in one place.
set -euo pipefail
WEFT_CACHE="${WEFT_CACHE:-$HOME/.cache/weft}"
declare -A PKG=(
  [controller-gen]="sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0"
  [golangci-lint]="github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.15.0"
)
name="${1:?usage: hack/tool.sh <tool>}"
spec="${PKG[$name]:-}"
[ -n "$spec" ] || { echo "unknown tool $name (known: ${!PKG[*]})" >&2; exit 2; }
version="${spec##*@}"
out="$WEFT_CACHE/bin/$name-$version"
if [ ! -x "$out" ]; then
  echo ">> installing $spec" >&2
  tmp="$(mktemp -d)"
  GOBIN="$tmp" GOFLAGS="-buildvcs=false" go install "$spec" >&2
  mkdir -p "$WEFT_CACHE/bin"
  mv "$tmp/$name" "$out"
  rm -rf "$tmp"
fi
echo "$out"
