#!/usr/bin/env bash
# Builds main packages of one Go module version into the cache, through a throwaway module
# (so the module's own replace directives don't matter), once per version:
#
#   hack/module-binaries.sh NAME MODULE VERSION PKG...
#
# Output: $WEFT_CACHE/NAME/VERSION/bin/<last element of each PKG>; prints that directory.
set -euo pipefail
WEFT_CACHE="${WEFT_CACHE:-$HOME/.cache/weft}"
name="$1" module="$2" version="$3"; shift 3
bin="$WEFT_CACHE/$name/$version/bin"
mod="$WEFT_CACHE/$name/$version/build"

todo=()
for p in "$@"; do [ -x "$bin/$(basename "$p")" ] || todo+=("$p"); done
if [ ${#todo[@]} -eq 0 ]; then echo "$bin"; exit 0; fi

mkdir -p "$bin" "$mod"
export GOFLAGS="-mod=mod -buildvcs=false" GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
if [ ! -f "$mod/go.mod" ]; then
  printf 'module weft.local/build%s\n\ngo 1.25\n\nrequire %s %s\n' "$name" "$module" "$version" >"$mod/go.mod"
fi
{
  echo "//go:build tools"
  echo "package build"
  echo "import ("
  for p in "$@"; do echo "  _ \"$p\""; done
  echo ")"
} >"$mod/tools.go"
cd "$mod"
go mod tidy >&2 2>&1 || true
for p in "${todo[@]}"; do
  echo ">> building $p@$version" >&2
  go build -trimpath -ldflags "-s -w" -o "$bin/$(basename "$p").tmp" "$p" >&2
  mv "$bin/$(basename "$p").tmp" "$bin/$(basename "$p")"
done
echo "$bin"
