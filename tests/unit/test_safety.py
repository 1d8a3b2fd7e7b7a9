"""Keys and the dev cluster are safe: private files stay private, writes are atomic and locked, `down`
deletes only what `up` made and signals only processes it started; every CLI flag has help and typed
numbers."""

from __future__ import annotations

import argparse
import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from provider.chain.keys import Keyring
from provider.cli import build_parser
from provider.devcluster import MARKER, DevCluster, DevClusterError
from provider.files import write_private
from tests.conftest import REPO


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_keyring_is_0600_in_a_0700_directory_even_beside_a_stale_world_readable_temp(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "keyring.json"
    path.parent.mkdir(mode=0o700)
    stale = path.with_suffix(".tmp")  # what the old writer left behind, readable by everyone
    stale.write_text("{}")
    stale.chmod(0o644)
    ring = Keyring(path)
    ring.add("provider")
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    assert json.loads(path.read_text()).keys() == {"provider"}
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".keyring.json.")]  # no temp file left
    fresh = Keyring(tmp_path / "new" / "dir" / "keyring.json")
    fresh.add("t")
    assert mode(fresh.path) == 0o600 and mode(fresh.path.parent) == 0o700


def test_concurrent_writers_lose_no_key(tmp_path: Path) -> None:
    path = tmp_path / "k" / "keyring.json"
    errors: list[BaseException] = []

    def add(i: int) -> None:
        try:
            Keyring(path).add(f"key{i}")
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert Keyring(path).names() == sorted(f"key{i}" for i in range(16))


def test_a_damaged_keyring_is_a_clear_error(tmp_path: Path) -> None:
    from provider.chain.keys import KeyringError

    path = tmp_path / "keyring.json"
    path.write_text("{not json")
    with pytest.raises(KeyringError, match="not a keyring file"):
        Keyring(path).get("x")


def test_private_files_are_never_readable_by_others(tmp_path: Path) -> None:
    target = tmp_path / "ca.key"
    target.write_text("old")
    target.chmod(0o644)
    write_private(target, b"secret")
    assert mode(target) == 0o600 and target.read_bytes() == b"secret"


def test_down_refuses_a_directory_up_did_not_make(tmp_path: Path) -> None:
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(DevClusterError, match="not created by"):
        DevCluster(precious).down()
    assert (precious / "thesis.tex").exists()
    with pytest.raises(DevClusterError, match="was not made by the dev cluster"):
        DevCluster(precious).up(pool="cpu:1", timeout=1)
    assert (precious / "thesis.tex").exists()


def test_down_never_signals_a_process_it_did_not_start(tmp_path: Path) -> None:
    """A PID in the state file that now belongs to another program (reused after a reboot) survives."""
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        state_dir = tmp_path / "state"
        state_dir.mkdir()
        (state_dir / MARKER).write_text("")
        (state_dir / "state.json").write_text(
            json.dumps({"pids": {"kube-apiserver": bystander.pid}, "commands": {"kube-apiserver": "/x/kube-apiserver"}})
        )
        cluster = DevCluster(state_dir)
        assert cluster.running()["kube-apiserver"] is False
        cluster.down()
        time.sleep(0.2)
        assert bystander.poll() is None, "down killed a process it did not start"
        assert not state_dir.exists()
    finally:
        bystander.kill()
        bystander.wait()


def _actions(parser: argparse.ArgumentParser, path: str = "gpu-provider") -> list[tuple[str, argparse.Action]]:
    out: list[tuple[str, argparse.Action]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _actions(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            out.append((path, action))
    return out


def test_every_flag_and_argument_has_help_text() -> None:
    missing = [f"{path} {a.dest}" for path, a in _actions(build_parser()) if not a.help]
    assert not missing, missing


@pytest.mark.parametrize(
    "argv",
    [
        ["tenant", "fund", "--amount", "abc"],
        ["tenant", "bids", "ten"],
        ["tenant", "deploy", "x.yaml", "--wait", "soon"],
        ["chain", "serve", "--port", "99999"],
        ["chain", "serve", "--bid-timeout-blocks", "-1"],
        ["agent", "--interval", "fast"],
    ],
)
def test_bad_numbers_are_usage_errors_not_tracebacks(argv: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "provider.cli", *argv], capture_output=True, text=True, cwd=REPO, timeout=60, check=False
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "error:" in result.stderr


def test_the_mock_chain_serves_a_non_loopback_address_only_when_told(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "provider.cli", "chain", "serve", "--db", str(tmp_path / "c.db"), "--host", "0.0.0.0"]
    result = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=60, check=False)
    assert result.returncode == 2 and "--expose" in result.stderr and "faucet" in result.stderr, result.stderr
    assert not (tmp_path / "c.db").exists()  # refused before anything was made


def test_inventory_reads_kubeconfig_like_kubectl(tmp_path: Path) -> None:
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "missing.kubeconfig")}
    result = subprocess.run(
        [sys.executable, "-m", "provider.cli", "inventory"], capture_output=True, text=True, cwd=REPO, timeout=60,
        env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 1 and "missing.kubeconfig" in result.stderr and "Traceback" not in result.stderr


def test_cluster_tests_refuse_a_cluster_the_session_did_not_create(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "GPU_PROVIDER_TESTS_"))}
    env["KUBECONFIG"] = str(tmp_path / "production.kubeconfig")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/cluster/test_devcluster.py::test_nodes_match_the_default_pool"],
        capture_output=True, text=True, cwd=REPO, timeout=300, env=env, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "names a cluster this test session did not create" in result.stdout + result.stderr
    assert "GPU_PROVIDER_TESTS_USE_KUBECONFIG=1" in result.stdout + result.stderr
