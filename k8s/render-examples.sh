#!/usr/bin/env bash
# Re-render k8s/rendered/<name>.yaml from k8s/examples/<name>.values.yaml with the chart.
# The release name is <name>. tests/test_chart.py fails when a committed rendering drifts.
set -euo pipefail
cd "$(dirname "$0")/.."
helm=$(python3 -c 'import sys; sys.path.insert(0, "tests"); import helm_tool; print(helm_tool.helm_binary())')
for values in k8s/examples/*.values.yaml; do
    name=$(basename "$values" .values.yaml)
    "$helm" template "$name" charts/tvq-train --namespace default --values "$values" \
        > "k8s/rendered/$name.yaml"
    echo "k8s/rendered/$name.yaml"
done
