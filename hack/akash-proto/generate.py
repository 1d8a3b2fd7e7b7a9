"""Generates the Python protobuf types the Akash adapter uses from the vendored .proto files.

Inputs (nothing hand-written):
- Akash's own protos: ``proto/node`` of the vendored chain-sdk archive (../shared/vendor/akash);
- cosmos-sdk v0.53.5's ``proto/`` (the Tx, SignDoc, coin and secp256k1 key types), cosmos-proto,
  gogoproto and gogo's googleapis, from the Go module proxy (``go mod download``);
- protoc from grpcio-tools, and mypy-protobuf for the .pyi stubs that keep the adapter under mypy --strict.

Output: the package ``provider/chain/akash/pb``, committed, so that a clean clone, its image and its
wheel run ``chain.kind: akash`` with nothing from ../shared. ``--check`` (run by ``make lint``) fails
when the committed package is not exactly what the inputs generate. The generated absolute imports
(``from akash.market.v1beta5 import ...``) are rewritten into that package, so nothing lands at the top
level (a generated ``google.api`` there would shadow the protobuf runtime's ``google`` package).

Cached by the hash of the inputs under $GPU_PROVIDER_CACHE/akash/proto-HASH; a cached tree is copied in
at once. ``make proto`` regenerates it (commit the result).

    python hack/akash-proto/generate.py [--check]
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
VENDOR = Path(os.environ.get("GPU_PROVIDER_AKASH_VENDOR", REPO.parent / "shared" / "vendor" / "akash"))
CACHE = Path(os.environ.get("GPU_PROVIDER_CACHE", Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gpu-provider")) / "akash"
OUT = REPO / "provider" / "chain" / "akash" / "pb"
PACKAGE = "provider.chain.akash.pb"
CHAIN_SDK = "chain-sdk-217f62d1.tar.xz"
# module -> the directory inside it that is a proto include root
MODULES = {
    "github.com/cosmos/cosmos-sdk@v0.53.5": "proto",
    "github.com/cosmos/cosmos-proto@v1.0.0-beta.5": "proto",
    "github.com/cosmos/gogoproto@v1.7.0": ".",
    "github.com/gogo/googleapis@v1.4.1": ".",
}
# Akash's protos that the adapter needs, plus the cosmos transaction and key types; their imports are
# followed to a closed set.
ROOTS = (
    "akash/market/v1beta5/*.proto",
    "akash/market/v1/*.proto",
    "akash/deployment/v1beta4/*.proto",
    "akash/deployment/v1/*.proto",
    "akash/escrow/v1/*.proto",
    "akash/provider/v1beta4/*.proto",
    "akash/cert/v1/*.proto",
    "akash/base/*/*.proto",
    "akash/base/*/*/*.proto",
    "cosmos/tx/v1beta1/tx.proto",
    "cosmos/crypto/secp256k1/keys.proto",
    "cosmos/auth/v1beta1/auth.proto",
    "cosmos/bank/v1beta1/tx.proto",
)
TOP_LEVEL = ("akash", "cosmos", "cosmos_proto", "gogoproto", "amino", "google.api", "tendermint")
IMPORT = re.compile(r"^(from|import) ((?:%s)(?:\.\w+)*)" % "|".join(re.escape(t) for t in TOP_LEVEL), re.M)


def say(msg: str) -> None:
    print(f"akash-proto: {msg}", file=sys.stderr, flush=True)


def input_hash() -> str:
    h = hashlib.sha256()
    h.update((VENDOR / CHAIN_SDK).read_bytes())
    h.update(Path(__file__).read_bytes())
    for name in ("grpcio-tools", "mypy-protobuf"):
        h.update(f"{name}=={metadata.version(name)}".encode())
    h.update(json.dumps(MODULES, sort_keys=True).encode())
    return h.hexdigest()[:16]


def module_dirs() -> list[Path]:
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"}
    go = shutil.which("go") or "/usr/local/go/bin/go"
    proc = subprocess.run(
        [go, "mod", "download", "-json", *MODULES], capture_output=True, text=True, env=env, cwd=tempfile.gettempdir()
    )
    found: dict[str, Path] = {}
    for chunk in re.split(r"(?<=\})\s*(?=\{)", proc.stdout.strip()):
        info = json.loads(chunk)
        if info.get("Error"):
            raise SystemExit(f"akash-proto: go mod download {info['Path']}: {info['Error']}")
        found[f"{info['Path']}@{info['Version']}"] = Path(info["Dir"])
    missing = set(MODULES) - set(found)
    if proc.returncode != 0 or missing:
        raise SystemExit(f"akash-proto: go mod download failed ({sorted(missing)}): {proc.stderr[-2000:]}")
    return [found[m] / sub for m, sub in MODULES.items()]


def closure(roots: list[str], includes: list[Path]) -> list[str]:
    """The root files and everything they import, except protoc's own well-known types."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name.startswith("google/protobuf/"):
            continue
        path = next((d / name for d in includes if (d / name).is_file()), None)
        if path is None:
            raise SystemExit(f"akash-proto: {name} is imported but found in no include root")
        seen.add(name)
        todo += re.findall(r'^import\s+(?:public\s+)?"([^"]+)";', path.read_text(), re.M)
    return sorted(seen)


def generate(dest: Path) -> None:
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        with tarfile.open(VENDOR / CHAIN_SDK) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith("chain-sdk/proto/node/") and m.isfile()]
            tar.extractall(src, members=members, filter="data")
        akash_root = src / "chain-sdk" / "proto" / "node"
        includes = [akash_root, *module_dirs()]
        roots = sorted(
            str(p.relative_to(d)) for pattern in ROOTS for d in includes for p in d.glob(pattern) if p.is_file()
        )
        files = closure(roots, includes)
        well_known = Path(protoc.__file__).parent / "_proto"
        gen = Path(tmp) / "gen"
        gen.mkdir()
        plugin = shutil.which("protoc-gen-mypy", path=str(Path(sys.executable).parent))
        if plugin is None:
            raise SystemExit("akash-proto: protoc-gen-mypy not found beside this Python (pip install mypy-protobuf)")
        args = ["protoc", *[f"-I{d}" for d in includes], f"-I{well_known}"]
        args += [f"--python_out={gen}", f"--mypy_out=quiet:{gen}", f"--plugin=protoc-gen-mypy={plugin}", *files]
        if protoc.main(args) != 0:
            raise SystemExit("akash-proto: protoc failed (see above)")
        for path in gen.rglob("*"):
            if path.suffix in (".py", ".pyi"):
                text = IMPORT.sub(lambda m: f"{m.group(1)} {PACKAGE}.{m.group(2)}", path.read_text())
                path.write_text(text)
        for d in [gen, *(p for p in gen.rglob("*") if p.is_dir())]:
            (d / "__init__.py").touch()
        (gen / "__init__.py").write_text(
            f'"""Generated by hack/akash-proto/generate.py from {len(files)} .proto files; do not edit."""\n'
        )
        (gen / "py.typed").touch()
        shutil.copytree(gen, dest)
    say(f"generated {len(files)} .proto files")


def cached_tree(digest: str) -> Path:
    """The generated tree for ``digest``, generating it once."""
    cached = CACHE / f"proto-{digest}"
    if not (cached / ".complete").is_file():
        say(f"generating Python types from the Akash, cosmos-sdk and gogoproto .proto files into {cached}")
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix="proto.", dir=CACHE))
        shutil.rmtree(partial)
        generate(partial)
        (partial / ".inputs").write_text(digest + "\n")
        (partial / ".complete").touch()
        shutil.rmtree(cached, ignore_errors=True)
        partial.rename(cached)
        for old in CACHE.glob("proto-*"):
            if old != cached:
                shutil.rmtree(old, ignore_errors=True)
    return cached


def files_of(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and p.name != ".complete" and "__pycache__" not in p.parts
    }


def main() -> int:
    check = "--check" in sys.argv[1:]
    if not (VENDOR / CHAIN_SDK).is_file():
        say(f"no vendored chain-sdk at {VENDOR} (set GPU_PROVIDER_AKASH_VENDOR)")
        return 3
    digest = input_hash()
    stamp = OUT / ".inputs"
    if not check and stamp.is_file() and stamp.read_text().strip() == digest:
        return 0
    want = files_of(cached_tree(digest))
    if check:
        have = files_of(OUT) if OUT.is_dir() else {}
        wrong = sorted(n for n in want.keys() | have.keys() if want.get(n) != have.get(n))
        if wrong:
            say(
                f"{OUT.relative_to(REPO)} is not what its inputs generate ({len(wrong)} files differ, e.g. "
                f"{', '.join(wrong[:3])}): run `make proto` and commit the result"
            )
            return 1
        return 0
    shutil.rmtree(OUT, ignore_errors=True)
    shutil.copytree(cached_tree(digest), OUT, ignore=shutil.ignore_patterns(".complete"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
