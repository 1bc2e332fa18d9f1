#!/usr/bin/env bash
# Regenerates code and manifests in a scratch copy of the tree and fails if anything differs
# from the working tree, so the committed generated files always match their sources.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
tar -C "$root" --exclude=.git --exclude=./bin -cf - . | tar -C "$scratch" -xf -
make -s -C "$scratch" generate >/dev/null
if ! diff -r -q "$root/api" "$scratch/api" >/dev/null || ! diff -r -q "$root/config" "$scratch/config" >/dev/null; then
  echo "generated files are stale; run 'make generate' and commit the result:" >&2
  diff -r -u "$root/api" "$scratch/api" >&2 || true
  diff -r -u "$root/config" "$scratch/config" >&2 || true
  exit 1
fi
echo "generated files are up to date"
