#!/usr/bin/env bash
# Run every benchmark, writing NAME-TAG.json and NAME-TAG.png into OUT_DIR.
#
#   bench/run_all.sh OUT_DIR [DEVICE_TAG]
#
# DEVICE_TAG names the machine in the file names (default: gpu-<model> when nvidia-smi finds a
# GPU, else cpu-<cores>core). Sized to finish in about 8 minutes on one H200; on a 2-core CPU
# machine it takes about an hour (the quadratic models at 16k tokens dominate). On a GPU the
# throughput benchmark runs one process only (two processes would share the one GPU), and the
# launcher benchmark runs only when a helm binary is on PATH or in .cache/helm (it is not
# downloaded there). Every benchmark runs even if an earlier one fails; the exit code says
# whether all succeeded.
set -uo pipefail

out=${1:?usage: bench/run_all.sh OUT_DIR [DEVICE_TAG]}
cd "$(dirname "$0")/.."
mkdir -p "$out"

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1 | tr 'A-Z ' 'a-z-')
    tag=${2:-gpu-${gpu}}
    processes=1
    timeout_s=150
    export XLA_PYTHON_CLIENT_PREALLOCATE=false  # peak memory is then what a step really needs
else
    tag=${2:-cpu-$(nproc)core}
    processes=1,2
    timeout_s=1800
fi

failed=()
run() {
    local name=$1
    shift
    echo "== $name ($tag) $(date -u +%H:%M:%S)"
    python -m "bench.$name" --device-tag "$tag" --out "$out" "$@" || failed+=("$name")
}

run attention_scaling --timeout-s "$timeout_s"
run sampling
run throughput --processes "$processes"
if command -v helm >/dev/null 2>&1 || [ -x .cache/helm/helm ]; then
    helm_bin=$(command -v helm || echo .cache/helm/helm)
    run render_speed --helm "$helm_bin"
else
    echo "== render_speed skipped: no helm on PATH or in .cache/helm"
fi

echo "== done $(date -u +%H:%M:%S): results in $out"
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed: ${failed[*]}" >&2
    exit 1
fi
