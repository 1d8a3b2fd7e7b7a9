"""Benchmark: parse + validate + derive manifest, group specs and version for the whole SDL corpus.

Prints files/s and per-file p50/p99 for ours and, when given the reference oracle (built by
hack/sdl-oracle/record.sh; pass --oracle PATH or set GPU_PROVIDER_SDL_ORACLE), for Akash's Go parser on
the same files. Not a test: it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import sdl  # noqa: E402

CORPUS = REPO.parent / "shared" / "corpus"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_ours(files: list[Path], rounds: int) -> list[float]:
    data = [f.read_bytes() for f in files]
    per_file: list[float] = []
    for text in data:
        best = float("inf")
        for _ in range(rounds):
            start = time.perf_counter_ns()
            try:
                d = sdl.parse(text)
                d.manifest_json()
                d.groups_json()
            except sdl.SdlError:
                pass
            best = min(best, time.perf_counter_ns() - start)
        per_file.append(best / 1e6)
    return per_file


def run_oracle(binary: str, files: list[Path], rounds: int) -> list[float]:
    out = subprocess.run([binary, "-bench", str(rounds), *map(str, files)], capture_output=True, text=True, check=True)
    return [min(json.loads(line)["ns"]) / 1e6 for line in out.stdout.splitlines()]


def report(name: str, per_file_ms: list[float]) -> None:
    total_s = sum(per_file_ms) / 1000
    print(
        f"{name:<22} files={len(per_file_ms):4d}  files/s={len(per_file_ms) / total_s:9.0f}  "
        f"p50={statistics.median(per_file_ms):7.3f} ms  p99={percentile(per_file_ms, 0.99):7.3f} ms  "
        f"max={max(per_file_ms):7.3f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5, help="runs per file; the best is kept")
    parser.add_argument("--oracle", default=os.environ.get("GPU_PROVIDER_SDL_ORACLE"), help="reference oracle binary")
    args = parser.parse_args()
    files = sorted(p for p in CORPUS.rglob("*") if p.suffix in (".yaml", ".yml"))
    print(f"SDL corpus: {len(files)} files under {CORPUS}; best of {args.rounds} runs per file")
    report("ours (Python)", run_ours(files, args.rounds))
    if args.oracle:
        report("reference (Go)", run_oracle(args.oracle, files, args.rounds))
    else:
        print("reference (Go)         not run: pass --oracle or set GPU_PROVIDER_SDL_ORACLE (see hack/sdl-oracle)")
    hostile_errors()


def hostile_errors() -> None:
    """Error collection stays linear: a 100 KB file with 8,000 unknown keys (8,000 problems)."""
    for keys in (2_000, 8_000):
        body = "\n".join(f"    k{i}: 1" for i in range(keys))
        text = f'version: "2.0"\nservices:\n  web:\n    image: x\n{body}\n'
        start = time.perf_counter()
        try:
            sdl.parse(text)
        except sdl.SdlError as e:
            problems = len(e.problems) + len(e.warnings)
        print(
            f"hostile: {keys:,} unknown keys in {len(text) / 1000:.0f} KB -> {problems:,} problems "
            f"in {(time.perf_counter() - start) * 1000:.0f} ms"
        )


if __name__ == "__main__":
    main()
