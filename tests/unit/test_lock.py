"""requirements.lock (the image's dependencies) pins, with hashes, a version of every dependency that
pyproject.toml names, inside its range: a dependency added or narrowed without re-locking fails here.
Re-lock with the command in the lock's header."""

from __future__ import annotations

import re
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO

PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s\\]+)")


def _locked() -> dict[str, str]:
    pins: dict[str, str] = {}
    lines = (REPO / "requirements.lock").read_text().splitlines()
    for i, line in enumerate(lines):
        m = PIN.match(line)
        if m:
            assert i + 1 < len(lines) and "--hash=sha256:" in lines[i + 1], f"{m.group(1)} is pinned without a hash"
            pins[canonicalize_name(m.group(1))] = m.group(2)
    return pins


def test_every_dependency_is_locked_inside_its_range() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    locked = _locked()
    needed = [Requirement(r) for r in project["project"]["dependencies"]]
    needed += [Requirement(r) for r in project["build-system"]["requires"]]
    for req in needed:
        name = canonicalize_name(req.name)
        assert name in locked, f"{req.name} is not in requirements.lock: re-lock"
        assert req.specifier.contains(locked[name], prereleases=True), (
            f"{req.name}: locked {locked[name]} is outside {req.specifier}: re-lock"
        )


def test_the_lock_installs_without_the_index_or_a_local_path() -> None:
    text = (REPO / "requirements.lock").read_text()
    assert "--find-links" not in text and "--index-url" not in text and "file://" not in text
