#!/usr/bin/env bash
# Builds akash-jwt: tenant JWTs minted by Akash's own signer (chain-sdk go/util/jwt from the vendored
# archive, upstream cosmos-sdk v0.53.5's keyring from the module proxy), so the tests check our verifier
# against Akash's signer, not against itself. The replaces follow Akash's node (see
# ../shared/vendor/akash/README.md); the vendored chain-sdk is swapped in for pkg.akt.dev/*.
#
# Cached by the hash of its inputs under $GPU_PROVIDER_CACHE/akash/jwt-HASH; prints the binary's path on
# stdout, progress on stderr. Cold: a few minutes (cosmos-sdk compiles); cached: instant.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
vendor="${GPU_PROVIDER_AKASH_VENDOR:-$repo/../shared/vendor/akash}"
cache_root="${GPU_PROVIDER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gpu-provider}/akash"
archive="$vendor/chain-sdk-217f62d1.tar.xz"
say() { echo "akash-jwt: $*" >&2; }

[ -f "$archive" ] || { say "no vendored chain-sdk at $archive (set GPU_PROVIDER_AKASH_VENDOR)"; exit 3; }
hash="$(sha256sum "$archive" "$here/main.go" "$here/go.mod" "$here/go.sum" "$here/build.sh" | sed "s|  .*/|  |" | sha256sum | cut -c1-16)"
out="$cache_root/jwt-$hash"
if [ -x "$out/akash-jwt" ]; then
  echo "$out/akash-jwt"
  exit 0
fi
command -v go >/dev/null 2>&1 || export PATH="/usr/local/go/bin:$PATH"
command -v go >/dev/null 2>&1 || { say "no go on PATH (hack/devcluster/build.sh --toolchain-only finds or installs one)"; exit 3; }
mkdir -p "$cache_root"
work="$(mktemp -d "$cache_root/jwt-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
say "building Akash's JWT signer from $archive"
tar -xJf "$archive" -C "$work" chain-sdk/go chain-sdk/specs chain-sdk/testdata
mkdir "$work/src"
cp "$here/main.go" "$here/go.mod" "$here/go.sum" "$work/src/"
export GOTOOLCHAIN=go1.25.5 GOFLAGS=-mod=mod CGO_ENABLED=1
cd "$work/src"
go mod edit -replace "pkg.akt.dev/go=$work/chain-sdk/go" -replace "pkg.akt.dev/specs=$work/chain-sdk/specs" \
  -replace "pkg.akt.dev/testdata=$work/chain-sdk/testdata"
if ! go build -trimpath -o "$work/akash-jwt" . >"$work/build.log" 2>&1; then
  tail -30 "$work/build.log" >&2
  say "build failed"
  exit 1
fi
mkdir -p "$out.partial"
mv "$work/akash-jwt" "$out.partial/"
rm -rf "$out" && mv "$out.partial" "$out"
for old in "$cache_root"/jwt-*; do
  [ "$old" = "$out" ] || [ ! -d "$old" ] || case "$old" in *jwt-build.*) ;; *) rm -rf "$old" ;; esac
done
say "built in $(( $(date +%s) - start )) s"
echo "$out/akash-jwt"
