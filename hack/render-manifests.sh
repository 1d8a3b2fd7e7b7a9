#!/usr/bin/env bash
# manifests/: the chart rendered once as plain YAML, for `kubectl apply -k manifests/` without Helm.
# Run after changing charts/gpu-provider (tests/cluster/test_chart.py fails while they differ).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(bash hack/devcluster/build.sh)
exec "$bin/helm" template gpu-provider charts/gpu-provider \
  --namespace gpu-provider --kube-version 1.36.3 \
  --values manifests/values.yaml >manifests/install.yaml
