#!/usr/bin/env bash
# `make run`: the provider daemon on the embedded defaults — the local dev cluster (real Kubernetes,
# simulated GPU nodes) and the mock chain — with a funded provider key. Ctrl-C stops the daemon and
# the chain; the dev cluster keeps running (gpu-provider devcluster down removes it).
set -euo pipefail
cd "$(dirname "$0")/.."
G="$PWD/.venv/bin/gpu-provider"
STATE="${GPU_PROVIDER_STATE:-$HOME/.local/state/gpu-provider}"
CHAIN_PORT="${GPU_PROVIDER_CHAIN_PORT:-26680}"
CHAIN="http://127.0.0.1:$CHAIN_PORT"
export GPU_PROVIDER_KEYRING="$STATE/keyring.json"
mkdir -p "$STATE"

echo "== dev cluster (first run builds Kubernetes from source: ~10 min)" >&2
KUBECONFIG_PATH="$("$G" devcluster up)"

echo "== mock chain on $CHAIN (state $STATE/mock-chain.sqlite)" >&2
"$G" chain serve --db "$STATE/mock-chain.sqlite" --port "$CHAIN_PORT" >"$STATE/mock-chain.log" 2>&1 &
CHAIN_PID=$!
PROVIDER_PID=""
cleanup() { kill $PROVIDER_PID "$CHAIN_PID" 2>/dev/null || true; }
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM HUP
for _ in $(seq 100); do curl -fs "$CHAIN/status" >/dev/null 2>&1 && break; sleep 0.1; done

for name in provider tenant; do
  "$G" tenant keys show "$name" >/dev/null 2>&1 || "$G" tenant keys add "$name" >/dev/null
done
"$G" tenant --chain "$CHAIN" --key provider fund --denom uakt >/dev/null
"$G" tenant --chain "$CHAIN" --key tenant fund --denom uact >/dev/null

cat >"$STATE/provider.yaml" <<YAML
chain: {url: "$CHAIN", key: provider, keyring: "$GPU_PROVIDER_KEYRING"}
provider: {state_dir: "$STATE/provider", attributes: {host: gpu-provider, region: local}, host_uri: "http://127.0.0.1:8443"}
inventory: {kubeconfig: "$KUBECONFIG_PATH", storage_capacity: {default: 10Ti, beta3: 10Ti}}
api: {address: "127.0.0.1:8443", insecure_http: true}
YAML
"$G" setup --config "$STATE/provider.yaml" >&2

cat >&2 <<TXT
== provider daemon (config $STATE/provider.yaml). As a tenant, in another terminal:
   export GPU_PROVIDER_KEYRING=$GPU_PROVIDER_KEYRING
   $G tenant --chain $CHAIN deploy sdl/examples/llm-inference.yaml
   $G tenant --chain $CHAIN accept <bid id printed above>
   $G tenant --chain $CHAIN send-manifest <dseq> sdl/examples/llm-inference.yaml
   $G tenant --chain $CHAIN lease-status <dseq>/1/1
   $G inventory --kubeconfig $KUBECONFIG_PATH
TXT
"$G" run --config "$STATE/provider.yaml" &
PROVIDER_PID=$!
wait "$PROVIDER_PID"
