#!/usr/bin/env bash
# Regenerates code and manifests in a scratch copy of the tree and fails if anything differs
# from the working tree, so the committed generated files always match their sources.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
tar -C "$root" --exclude=.git --exclude=./bin -cf - . | tar -C "$scratch" -xf -
make -s -C "$scratch" generate >/dev/null
stale=0
for p in api config agent/datapath/ovs/vswitch agent/datapath/ebpf bundle Dockerfile bundle.Dockerfile; do
  if ! diff -r -q "$root/$p" "$scratch/$p" >/dev/null 2>&1; then
    [[ $stale == 1 ]] || echo "generated files are stale; run 'make generate' and commit the result:" >&2
    stale=1
    diff -r -u -N "$root/$p" "$scratch/$p" >&2 || true
  fi
done
[[ $stale == 0 ]] || exit 1
echo "generated files are up to date"
