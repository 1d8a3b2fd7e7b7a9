#!/usr/bin/env bash
# Builds the dev cluster's real components (kube-apiserver, kube-controller-manager, kube-scheduler,
# etcd, kwok, helm) from the Go modules pinned beside this script, into a cache directory keyed by
# those pins. A rebuild happens only when a go.mod, go.sum or tools.go changes.
# Prints the bin directory on stdout; progress goes to stderr.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${GPU_PROVIDER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gpu-provider}/devcluster"

if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
  export PATH="$PATH:/usr/local/go/bin"  # the usual install location, when a login shell did not add it
fi
if ! command -v go >/dev/null 2>&1; then
  echo "devcluster: the Go toolchain is required to build the dev cluster (install Go >= 1.26)" >&2
  exit 3
fi

key="$(cd "$here" && cat build.sh */go.mod */go.sum */tools.go | sha256sum | cut -c1-16)"
bin="$cache_root/$key/bin"
if [ -f "$bin/.complete" ]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$bin"
export GOFLAGS="-mod=mod -trimpath"
export CGO_ENABLED=0
build() { # module-dir output-name package
  local dir="$1" name="$2" pkg="$3"
  echo "devcluster: building $name from $pkg (pins in $dir/go.mod)" >&2
  (cd "$here/$dir" && go build -ldflags="-s -w" -o "$bin/$name" "$pkg")
}
start=$(date +%s)
build etcd etcd go.etcd.io/etcd/server/v3
build kwok kwok sigs.k8s.io/kwok/cmd/kwok
build helm helm helm.sh/helm/v3/cmd/helm
for c in kube-apiserver kube-controller-manager kube-scheduler; do
  build kube "$c" "k8s.io/kubernetes/cmd/$c"
done
for b in etcd kwok helm kube-apiserver kube-controller-manager kube-scheduler; do
  [ -x "$bin/$b" ] || { echo "devcluster: $b missing after build" >&2; exit 1; }
done
echo "$(( $(date +%s) - start ))" > "$bin/.build-seconds"
touch "$bin/.complete"
echo "devcluster: built in $(cat "$bin/.build-seconds") s into $bin" >&2
echo "$bin"
