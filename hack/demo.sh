#!/usr/bin/env bash
# `make demo`: the two-cluster lab with weft installed and a sample app, then a short tour.
# Re-running it reuses a lab that is already up.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
eval "$(hack/lab-deps.sh)"
weftctl="$root/bin/weftctl"
kubectl="$KUBE_BIN/kubectl"
state="${WEFT_CACHE:-$HOME/.cache/weft}/lab"
say() { printf '\033[36m>>\033[0m %s\n' "$*"; }
show() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

if [ -f "$state/ready" ] && "$weftctl" lab status >/dev/null 2>&1 && ! "$weftctl" lab status | grep -q "no lab"; then
  say "a lab is already up; reusing it"
else
  say "bringing the lab up (first run builds Kubernetes, CoreDNS and CNI plugins: ~15 min)"
  /usr/bin/time -f "lab up: %e s, weftctl peak RSS %M KiB" "$weftctl" lab up \
    --kube-bin "$KUBE_BIN" --coredns "$COREDNS_BIN/coredns" --cni-bin "$CNI_BIN" --weft-bin "$root/bin"
fi
export KUBECONFIG="$state/kubeconfig"
k() { "$kubectl" "$@"; }

for i in 1 2; do
  ctx="weft-$i"
  say "installing weft into $ctx from config/default"
  k --context "$ctx" apply --server-side -k config/default >/dev/null
  k --context "$ctx" -n weft-system rollout status deploy/weft-operator --timeout=180s >/dev/null
  cat <<YAML | k --context "$ctx" apply -f - >/dev/null
apiVersion: fabric.weft.dev/v1alpha1
kind: ClusterNetwork
metadata: {name: default}
spec:
  clusterID: $ctx
  podCIDRs: [10.$((243 + i)).0.0/16]
  serviceCIDRs: [10.$((95 + i)).0.0/16]
YAML
  say "deploying the sample app into $ctx (namespace demo)"
  k --context "$ctx" create namespace demo --dry-run=client -o yaml | k --context "$ctx" apply -f - >/dev/null
  cat <<'YAML' | k --context "$ctx" apply -f - >/dev/null
apiVersion: apps/v1
kind: Deployment
metadata: {name: hello, namespace: demo}
spec:
  replicas: 2
  selector: {matchLabels: {app: hello}}
  template:
    metadata: {labels: {app: hello}}
    spec:
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            podAffinityTerm: {labelSelector: {matchLabels: {app: hello}}, topologyKey: kubernetes.io/hostname}
      containers:
      - name: hello
        image: registry.k8s.io/e2e-test-images/agnhost:2.53
        args: [netexec, --http-port=8080]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {httpGet: {path: /healthz, port: http}, periodSeconds: 2}
---
apiVersion: v1
kind: Service
metadata: {name: hello, namespace: demo}
spec:
  selector: {app: hello}
  ports: [{port: 80, targetPort: http}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: demo}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: client, image: busybox, command: [sleep, "86400"]}]
YAML
  k --context "$ctx" -n demo rollout status deploy/hello --timeout=120s >/dev/null
  k --context "$ctx" -n demo wait --for=condition=Ready pod/client --timeout=120s >/dev/null
  k --context "$ctx" wait --for=condition=Ready clusternetwork/default --timeout=60s >/dev/null
done

say "peering the clusters: weftctl peer join --from weft-1 --to weft-2"
"$weftctl" peer join --from weft-1 --to weft-2 >/dev/null
for i in 1 2; do k --context "weft-$i" wait --for=condition=Ready --timeout=60s clusterpeer --all >/dev/null; done

say "the tour (KUBECONFIG=$KUBECONFIG)"
show "$weftctl" lab status
show k --context weft-1 get nodes -o wide
show k --context weft-1 -n demo get pods -o wide
show k --context weft-1 get clusternetworks,tiers,clusterpeers
show k --context weft-2 get clusterpeers
show "$weftctl" status --context weft-1
show k --context weft-1 -n demo exec client -- wget -qO- http://hello/hostname
echo
show k --context weft-1 -n demo exec client -- nslookup hello.demo.svc.cluster.local
cat <<EOF

Try:
  export KUBECONFIG=$KUBECONFIG
  kubectl --context weft-2 get pods -A -o wide
  kubectl --context weft-1 -n demo exec -it client -- sh
  kubectl --context weft-1 -n weft-system logs deploy/weft-operator
  bin/weftctl lab status
  bin/weftctl status --context weft-2
  bin/weftctl gateway rotate-key weft-2-node-1 --context weft-2   # new WireGuard key, no gap
  bin/weftctl lab down          # or: make lab-down
EOF
