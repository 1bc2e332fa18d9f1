#!/usr/bin/env bash
# Installs Debian packages that are not installed yet: hack/apt-install.sh pkg...
# Idempotent and quiet when everything is present. Needs root (or sudo) only when installing.
set -euo pipefail
missing=()
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo ">> apt-get install ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# update only when the package lists are missing or older than a day
if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mtime -1 2>/dev/null | head -1)" ]; then
  $SUDO apt-get update -qq >&2
fi
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
