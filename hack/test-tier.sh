#!/usr/bin/env bash
# Prints the packages of one test tier, so `make test-<tier>` can run it alone:
#   unit        pure Go: no API server, no root
#   envtest     a real kube-apiserver and etcd (internal/testenv, envtest)
#   privileged  root: network namespaces, OVS, tunnels (may also start an API server)
#   e2e         the two-cluster lab (test/e2e)
# A package's tier follows from what its tests import (or whether they check for root), so a
# new package lands in the right tier without being listed here.
set -euo pipefail
tier="${1:?usage: hack/test-tier.sh unit|envtest|privileged|e2e}"
mod="$(go list -m)"
go list -f '{{.ImportPath}}|{{.Dir}}|{{join .TestGoFiles " "}} {{join .XTestGoFiles " "}}|{{join .TestImports " "}} {{join .XTestImports " "}}' ./... |
while IFS='|' read -r pkg dir files imports; do
  if [ "$pkg" = "$mod/test/e2e" ]; then t=e2e
  elif [[ " $imports " =~ (internal/netnstest|vishvananda/netns|internal/ovsrun|internal/tunneltest)\  ]] ||
       { [ -n "${files// /}" ] && (cd "$dir" && grep -lq 'Geteuid' $files); }; then t=privileged
  elif [[ " $imports " =~ (internal/testenv|controller-runtime/pkg/envtest|managertest)\  ]]; then t=envtest
  else t=unit
  fi
  [ "$t" = "$tier" ] && echo "$pkg"
done
exit 0
