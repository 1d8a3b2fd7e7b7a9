#!/usr/bin/env bash
# Builds Akash's own node (`akash` v2.0.1) from the vendored sources in ../shared/vendor/akash (the parts
# the Go module proxy refuses) plus the module proxy (everything else), for the local Akash devnet.
#
# Cached by the hash of its inputs (the vendored archives and patches, this script) under
# $GPU_PROVIDER_CACHE/akash/node-HASH; prints that directory's bin/ on stdout, progress on stderr.
# Cold: about 2 min of module downloads and 10 min of compiling on 2 cores; cached: instant.
#
# Facts this follows (../shared/vendor/akash/README.md): Go 1.25.5 (node pins bytedance/sonic v1.14.2,
# which does not build with Go 1.26), GOFLAGS=-mod=mod, the node patch applied in node/, upstream
# cosmos-sdk v0.53.5 from the proxy patched into Akash's fork, replaces for the pkg.akt.dev modules,
# CGO on, tags osusergo,netgo. The binary loads libwasmvm from the wasmvm module by rpath; it is copied
# beside the binary so that cleaning the Go module cache does not break a cached build.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
vendor="${GPU_PROVIDER_AKASH_VENDOR:-$repo/../shared/vendor/akash}"
cache_root="${GPU_PROVIDER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gpu-provider}/akash"
VERSION="2.0.1"
GO_TOOLCHAIN="go1.25.5"
COSMOS_SDK="v0.53.5"
say() { echo "akash-build: $*" >&2; }
phase() { say "$*"; echo "$*" >"$work/phase"; }

[ -d "$vendor" ] || { say "no vendored Akash sources at $vendor (set GPU_PROVIDER_AKASH_VENDOR)"; exit 3; }
inputs=("$vendor"/*.tar.xz "$vendor"/patches/*.diff "$here/build.sh")
hash="$(sha256sum "${inputs[@]}" | sed "s|  .*/|  |" | sha256sum | cut -c1-16)"
out="$cache_root/node-$hash"
if [ -x "$out/bin/akash" ] && [ -f "$out/.complete" ]; then
  echo "$out/bin"
  exit 0
fi

command -v go >/dev/null 2>&1 || export PATH="/usr/local/go/bin:$PATH"
command -v go >/dev/null 2>&1 || { say "no go on PATH (hack/devcluster/build.sh --toolchain-only finds or installs one)"; exit 3; }
mkdir -p "$cache_root"
work="$(mktemp -d "$cache_root/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
log="$cache_root/build.log"
: >"$log"
say "building akash v$VERSION from $vendor (log: $log); a cold build takes about 12 min on 2 cores"
echo "starting" >"$work/phase"
( while sleep 30; do say "still building after $(( $(date +%s) - start )) s: $(cat "$work/phase" 2>/dev/null)"; done ) &
heartbeat=$!
trap 'kill "$heartbeat" 2>/dev/null; rm -rf "$work"' EXIT

export GOTOOLCHAIN="$GO_TOOLCHAIN" GOFLAGS=-mod=mod CGO_ENABLED=1
src="$work/src"
mkdir -p "$src"
for archive in "$vendor"/*.tar.xz; do
  tar -xJf "$archive" -C "$src"
done
(cd "$src/node" && patch -p0 --quiet <"$vendor/patches/node-v${VERSION}-no-wasm-contracts.diff") >>"$log" 2>&1

phase "fetching cosmos-sdk $COSMOS_SDK from the module proxy and patching it into Akash's fork"
sdk_dir="$(cd "$src/node" && go mod download -json "github.com/cosmos/cosmos-sdk@$COSMOS_SDK" 2>>"$log" \
  | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[ -n "$sdk_dir" ] && [ -d "$sdk_dir" ] || { say "could not download cosmos-sdk $COSMOS_SDK (see $log)"; exit 1; }
cp -r "$sdk_dir" "$src/cosmos-sdk"
chmod -R u+w "$src/cosmos-sdk"
(cd "$src/cosmos-sdk" && patch -p0 -E --quiet <"$vendor/patches/cosmos-sdk-${COSMOS_SDK}-akash.diff") >>"$log" 2>&1

cd "$src/node"
go mod edit \
  -replace "github.com/cosmos/cosmos-sdk=$src/cosmos-sdk" \
  -replace "pkg.akt.dev/go=$src/chain-sdk/go" \
  -replace "pkg.akt.dev/go/cli=$src/chain-sdk/go/cli" \
  -replace "pkg.akt.dev/go/sdl=$src/chain-sdk-sdl/go/sdl" \
  -replace "pkg.akt.dev/specs=$src/chain-sdk/specs" \
  -replace "pkg.akt.dev/testdata=$src/chain-sdk/testdata"
phase "downloading modules"
go mod download >>"$log" 2>&1 || { say "module download failed (see $log)"; exit 1; }
phase "compiling (about 10 min cold)"
ldflags="-X github.com/cosmos/cosmos-sdk/version.Name=akash -X github.com/cosmos/cosmos-sdk/version.AppName=akash"
ldflags="$ldflags -X github.com/cosmos/cosmos-sdk/version.Version=$VERSION"
mkdir -p "$work/out/bin" "$work/out/lib"
go build -trimpath -tags osusergo,netgo -ldflags "$ldflags" -o "$work/out/bin/akash" ./cmd/akash >>"$log" 2>&1 \
  || { say "go build failed (see $log)"; tail -n 20 "$log" >&2; exit 1; }
wasmvm="$(go list -m -f '{{.Dir}}' github.com/CosmWasm/wasmvm/v3)"
cp "$wasmvm/internal/api/libwasmvm.x86_64.so" "$work/out/lib/"
LD_LIBRARY_PATH="$work/out/lib" "$work/out/bin/akash" version >>"$log" 2>&1 \
  || { say "the built akash does not run (see $log)"; exit 1; }
touch "$work/out/.complete"
rm -rf "$out"
mv "$work/out" "$out"
find "$cache_root" -maxdepth 1 -name 'node-*' ! -name "node-$hash" -exec rm -rf {} +  # older inputs' builds
say "akash v$VERSION built in $(( $(date +%s) - start )) s: $out/bin/akash"
echo "$out/bin"
