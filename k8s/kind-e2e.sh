#!/usr/bin/env bash
# The whole path on a machine with Docker, kind, kubectl and Python: a 3-node kind cluster, the
# JobSet controller, the cpu image, `helm install` of the chart with
# k8s/examples/cpu-kind.values.yaml (2 pods, jax.distributed over the JobSet's DNS names), then
# checks that the run succeeded, the leader logged step 20 or later and a checkpoint exists.
#   k8s/kind-e2e.sh            # KEEP=1 keeps the cluster; JOBSET_VERSION picks the controller
set -euo pipefail
cd "$(dirname "$0")/.."

cluster=${CLUSTER:-tvq-e2e}
jobset_version=${JOBSET_VERSION:-v0.8.1}
release=tvq-kind
image=localhost/tvq:cpu
values=k8s/examples/cpu-kind.values.yaml

for tool in docker kind kubectl python3; do
    command -v "$tool" >/dev/null || { echo "kind-e2e: $tool is not on PATH" >&2; exit 2; }
done
helm=$(python3 -c 'import sys; sys.path.insert(0, "tests"); import helm_tool; print(helm_tool.helm_binary())')

shared=$(mktemp -d /tmp/tvq-kind-shared.XXXXXX)
chmod 0777 "$shared"  # the pods run as uid 1000
config="$shared.kind-config.yaml"
sed "s|HOST_SHARED_DIR|$shared|" k8s/kind-config.yaml > "$config"

cleanup() {
    if [ "${KEEP:-0}" != 1 ]; then kind delete cluster --name "$cluster" || true; fi
}
trap cleanup EXIT

echo "== kind cluster $cluster (shared folder $shared)"
kind create cluster --name "$cluster" --config "$config" --wait 180s

echo "== JobSet controller $jobset_version"
kubectl apply --server-side \
    -f "https://github.com/kubernetes-sigs/jobset/releases/download/$jobset_version/manifests.yaml"
kubectl wait --for=condition=Available deployment/jobset-controller-manager \
    -n jobset-system --timeout=300s

echo "== image $image"
docker build --build-arg ACCELERATOR=cpu -t "$image" .
kind load docker-image "$image" --name "$cluster"

echo "== helm install $release"
"$helm" install "$release" charts/tvq-train --values "$values"
if ! kubectl wait --for=condition=Completed "jobset/$release" --timeout=900s; then
    kubectl get jobset "$release" -o yaml
    kubectl get pods -o wide -l "jobset.sigs.k8s.io/jobset-name=$release"
    kubectl logs --prefix --tail=50 -l "jobset.sigs.k8s.io/jobset-name=$release"
    exit 1
fi

echo "== checks"
logs=$(kubectl logs --prefix --tail=-1 -l "jobset.sigs.k8s.io/jobset-name=$release")
echo "$logs" | tail -20
last_step=$(echo "$logs" | awk '$2 == "tvq-metrics" {sub("step=", "", $3); step = $3} END {print step + 0}')
[ "$last_step" -ge 20 ] || { echo "kind-e2e: last logged step $last_step, expected 20" >&2; exit 1; }
ls -R "$shared/runs/tvq-kind" | head -20
[ -n "$(ls "$shared/runs/tvq-kind")" ] || { echo "kind-e2e: no checkpoint" >&2; exit 1; }
"$helm" uninstall "$release"
echo "kind-e2e: OK"
