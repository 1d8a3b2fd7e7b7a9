"""The gpu-provider command line: exit codes, FILE:LINE:COL output, JSON outputs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CORPUS, REPO

EXAMPLE = REPO / "sdl/examples/llm-inference.yaml"
PARITY = CORPUS / "fixtures/chain-sdk/testdata/sdl"


def cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "provider.cli", *args],
        input=None if stdin is None else stdin.decode(),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )


def test_check_valid_exits_0() -> None:
    result = cli("sdl", "check", str(EXAMPLE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_check_invalid_exits_1_with_located_lines(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.read_text().replace("size: 64Gi", "size: 64GB").replace("count: 1", "count: lots"))
    result = cli("sdl", "check", str(EXAMPLE), str(bad))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    for line in lines:
        assert re.match(rf"^{re.escape(str(bad))}:\d+:\d+: \S+: .+", line), line
    assert any("64GB" in line and "64Gi" in line for line in lines)


def test_missing_file_is_a_usage_error() -> None:
    result = cli("sdl", "check", "does-not-exist.yaml")
    assert result.returncode == 2
    assert "no such file" in result.stderr


def test_bad_flag_is_a_usage_error() -> None:
    assert cli("sdl", "check", "--frobnicate", str(EXAMPLE)).returncode == 2


def test_binary_input_is_an_invalid_sdl_not_a_crash(tmp_path: Path) -> None:
    junk = tmp_path / "junk.yaml"
    junk.write_bytes(bytes(range(256)) * 4)
    result = cli("sdl", "check", str(junk))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr


def test_strict_mode_rejects_schema_only_problems() -> None:
    path = CORPUS / "fixtures/chain-sdk/testdata/sdl/input/schema-only-invalid/invalid-denom.yaml"
    lenient = cli("sdl", "check", str(path))
    assert lenient.returncode == 0 and "warning:" in lenient.stderr
    assert cli("sdl", "check", "--strict", str(path)).returncode == 1


@pytest.mark.parametrize("what,fixture", [("manifest", "manifest.json"), ("groups", "group-specs.json")])
def test_manifest_and_groups_print_akash_json(what: str, fixture: str) -> None:
    result = cli("sdl", what, str(PARITY / "input/v2.0/gpu-basic/input.yaml"))
    assert result.returncode == 0
    assert json.loads(result.stdout) == json.loads((PARITY / "output-fixtures/v2.0/gpu-basic" / fixture).read_text())


def test_version_prints_the_reference_hash() -> None:
    recorded = {
        json.loads(line)["file"]: json.loads(line)
        for line in (REPO / "tests/sdl/data/oracle.jsonl").read_text().splitlines()
    }
    name = "fixtures/chain-sdk/testdata/sdl/input/v2.0/gpu-basic/input.yaml"
    result = cli("sdl", "version", str(CORPUS / name))
    assert result.stdout.strip() == recorded[name]["version"]


def test_stdin_is_read_with_dash() -> None:
    result = cli("sdl", "version", "-", stdin=EXAMPLE.read_bytes())
    assert result.returncode == 0 and len(result.stdout.strip()) == 64


def test_help_lists_every_command() -> None:
    out = cli("--help").stdout
    assert "sdl" in out and "devcluster" in out
    sdl_help = cli("sdl", "--help").stdout
    for cmd in ("check", "manifest", "groups", "version"):
        assert cmd in sdl_help


def test_devcluster_pool_and_taint_manifest() -> None:
    from provider.devcluster import DevClusterError, NodePlan, parse_pool

    plans = parse_pool("h100:2x8,cpu:1")
    assert [(p.name, p.model, p.gpus) for p in plans] == [
        ("sim-h100-0", "h100", 8),
        ("sim-h100-1", "h100", 8),
        ("sim-cpu-0", None, 0),
    ]
    tainted = NodePlan("n", "h100", 8).manifest(taint=True)
    assert tainted["spec"]["taints"] == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
    assert "taints" not in NodePlan("c", None, 0).manifest(taint=True)["spec"]
    for bad in ("h100:x", "b300:1x8", "h100:1x0", "nonsense"):
        with pytest.raises(DevClusterError):
            parse_pool(bad)
