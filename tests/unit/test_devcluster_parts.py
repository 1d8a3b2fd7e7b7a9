"""The dev cluster's pure parts: Docker-free image layers, image names, the real node's GPU spec, and the
host ledger that `down` undoes from (its real use is proven in tests/cluster/test_realnode.py)."""

from __future__ import annotations

import io
import os
import tarfile
import time
from pathlib import Path

import pytest

from provider.devcluster import DevClusterError
from provider.devcluster.host import Host, Ledger
from provider.devcluster.realnode import parse_gpus
from provider.devcluster.registry import Registry, layer_from_dir


def tree(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tool").write_bytes(b"\x7fELF fake")
    (root / "bin" / "tool").chmod(0o755)
    (root / "bin" / "alias").symlink_to("tool")
    (root / "etc").mkdir()
    (root / "etc" / "motd").write_text("hi\n")
    return root


def test_a_layer_is_deterministic_root_owned_and_keeps_modes_and_links(tmp_path: Path) -> None:
    first = layer_from_dir(tree(tmp_path / "a"))
    time.sleep(0.01)
    second_root = tree(tmp_path / "b")
    os.utime(second_root / "etc" / "motd", (1_000_000, 1_000_000))
    assert layer_from_dir(second_root) == first  # same tree, other mtimes: the same bytes, so the same digest
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert list(members) == ["bin", "etc", "bin/alias", "bin/tool", "etc/motd"]
        assert all(m.uid == 0 and m.gid == 0 and m.mtime == 0 for m in members.values())
        assert members["bin/tool"].mode & 0o777 == 0o755
        assert members["bin/alias"].issym() and members["bin/alias"].linkname == "tool"
        extracted = tar.extractfile("etc/motd")
        assert extracted is not None and extracted.read() == b"hi\n"


def test_a_layer_needs_a_directory(tmp_path: Path) -> None:
    with pytest.raises(DevClusterError, match="not a directory"):
        layer_from_dir(tmp_path / "missing")


@pytest.mark.parametrize("name", ["UPPER:1", "a//b", "-lead", "ok:bad tag", "x:" + "t" * 200, ""])
def test_bad_image_names_are_refused_before_anything_is_pushed(name: str, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "no-crane-here", 5000)  # a push would fail on the missing binary
    with pytest.raises(DevClusterError, match="image name"):
        registry.push_layer(name, b"", ["/bin/sh"])


def test_the_real_node_gpu_spec() -> None:
    assert parse_gpus("h200:2") == ("h200", 2)
    assert parse_gpus("rtx4090:16") == ("rtx4090", 16)
    for bad in ("h200", "h200:0", "h200:17", "b300:1", "h200:x", ":2"):
        with pytest.raises(DevClusterError, match="MODEL:COUNT"):
            parse_gpus(bad)


def test_the_ledger_records_before_it_changes_and_undo_removes_only_what_it_made(tmp_path: Path) -> None:
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep").write_text("not ours")
    ledger_path = tmp_path / "host.json"
    host = Host(ledger_path)
    host.make_dir(existing / "made" / "deeper" / "still")
    host.make_dir(existing)  # existed: not recorded
    host.own_tree(tmp_path / "tree")
    (tmp_path / "tree" / "data").write_text("x")
    # a crash now still leaves a ledger on disk that knows what was made
    saved = Ledger.load(ledger_path)
    assert saved.paths == [str(existing / "made"), str(tmp_path / "tree")]
    assert saved.roots == [str(tmp_path / "tree")]
    assert Host(ledger_path).undo() == []
    assert not (existing / "made").exists() and not (tmp_path / "tree").exists()
    assert (existing / "keep").read_text() == "not ours"


def test_an_unreadable_ledger_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "host.json"
    path.write_text("{not json")
    with pytest.raises(DevClusterError, match="by hand"):
        Ledger.load(path)
    assert Ledger.load(tmp_path / "absent.json") == Ledger()
