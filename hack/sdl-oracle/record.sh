#!/usr/bin/env bash
# Builds the reference-parser oracle against a chain-sdk checkout and records its verdict, manifest,
# group specs and version for every SDL of the corpus into tests/sdl/data/oracle.jsonl.
#   hack/sdl-oracle/record.sh /path/to/chain-sdk [corpus-dir]
# The module proxy refuses pkg.akt.dev/go (403), so a checkout of akash-network/chain-sdk is required.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
chain_sdk="$(cd "${1:?usage: record.sh CHAIN_SDK_CHECKOUT [CORPUS_DIR]}" && pwd)"
corpus="$(cd "${2:-$repo/../shared/corpus}" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$here/main.go" "$here/go.mod" "$here/go.sum" "$work/"
(cd "$work" && go mod edit -replace "pkg.akt.dev/go/sdl=$chain_sdk/go/sdl" -replace "pkg.akt.dev/go=$chain_sdk/go" \
  && GOFLAGS=-mod=mod go build -o "$work/sdl-oracle" .)
cd "$corpus"
find . -type f \( -name '*.yaml' -o -name '*.yml' \) | sed 's|^\./||' | LC_ALL=C sort \
  | xargs "$work/sdl-oracle" > "$repo/tests/sdl/data/oracle.jsonl"
echo "recorded $(wc -l < "$repo/tests/sdl/data/oracle.jsonl") files into tests/sdl/data/oracle.jsonl" >&2
