"""What the real node changes on the host, recorded as it happens so that ``down`` undoes exactly that.

The ledger lives in the cluster's state directory (host.json). Each change is recorded *before* it is
made, so a crash half-way through still leaves a ledger that undoes what was done. Undo runs in reverse
order of kind: mounts, network namespaces, links, nftables tables, sysctls, paths.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from provider.devcluster.errors import DevClusterError
from provider.files import write_private


def run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    if check and proc.returncode != 0:
        raise DevClusterError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def mounts_under(roots: tuple[str, ...]) -> list[str]:
    """Mount points at or below any of ``roots``, deepest first (so they can be unmounted in order)."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if any(point == r or point.startswith(r.rstrip("/") + "/") for r in roots):
                found.append(point)
    return sorted(set(found), key=lambda p: (-p.count("/"), p))


def nft_tables() -> list[str]:
    """Every nftables table as 'family name'."""
    out = run(["nft", "list", "tables"], check=False).stdout
    return [line.removeprefix("table ").strip() for line in out.splitlines() if line.startswith("table ")]


def ipsets() -> list[str]:
    """Every ipset's name (kube-router keeps NetworkPolicy address sets in them)."""
    return run(["ipset", "list", "-n"], check=False).stdout.split()


@dataclass
class Ledger:
    sysctls: dict[str, str] = field(default_factory=dict)  # path -> value before we changed it
    links: list[str] = field(default_factory=list)  # interfaces we created
    paths: list[str] = field(default_factory=list)  # directories that did not exist before we made them
    nft_before: list[str] = field(default_factory=list)  # tables that existed before up
    ipsets_before: list[str] | None = None  # ipsets that existed before up (None: not taken yet)
    roots: list[str] = field(default_factory=list)  # trees whose mounts are ours
    cgroup_roots: list[str] = field(default_factory=list)  # cgroup directories (per hierarchy) that are ours

    @classmethod
    def load(cls, path: Path) -> Ledger:
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError, TypeError) as e:
            raise DevClusterError(f"{path} cannot be read ({e}); undo the real node's host changes by hand") from e

    def save(self, path: Path) -> None:
        write_private(path, json.dumps(asdict(self), indent=2).encode())


class Host:
    """Makes host changes through a ledger saved after every record."""

    def __init__(self, ledger_path: Path) -> None:
        self.path = ledger_path
        self.ledger = Ledger.load(ledger_path)

    def _save(self) -> None:
        self.ledger.save(self.path)

    def snapshot_nft(self) -> None:
        """Remember the nftables tables and ipsets that exist now: undo deletes only the others."""
        if not self.ledger.nft_before:
            self.ledger.nft_before = nft_tables() or ["(none)"]
        if self.ledger.ipsets_before is None:
            self.ledger.ipsets_before = ipsets()
        self._save()

    def sysctl(self, name: str, value: str) -> None:
        path = "/proc/sys/" + name.replace(".", "/")
        current = Path(path).read_text().strip()
        if current == value:
            return
        self.ledger.sysctls.setdefault(path, current)
        self._save()
        Path(path).write_text(value)

    def make_dir(self, path: Path, mode: int = 0o755) -> None:
        """Create ``path`` (and parents); the topmost directory that did not exist is recorded."""
        top = None
        for p in [path, *path.parents]:
            if p.exists():
                break
            top = p
        if top is not None and str(top) not in self.ledger.paths:
            self.ledger.paths.append(str(top))
            self._save()
        path.mkdir(mode=mode, parents=True, exist_ok=True)

    def own_tree(self, path: Path) -> None:
        """A tree that is ours alone: mounts under it are unmounted and it is deleted on undo."""
        if str(path) not in self.ledger.roots:
            self.ledger.roots.append(str(path))
            self._save()
        self.make_dir(path)

    def own_cgroup(self, relative: str) -> None:
        if relative not in self.ledger.cgroup_roots:
            self.ledger.cgroup_roots.append(relative)
            self._save()

    def bridge(self, name: str, address: str) -> None:
        if name not in self.ledger.links:
            self.ledger.links.append(name)
            self._save()
        if run(["ip", "link", "show", name], check=False).returncode != 0:
            run(["ip", "link", "add", name, "type", "bridge"])
        run(["ip", "addr", "replace", address, "dev", name])
        run(["ip", "link", "set", name, "up"])

    def own_link(self, name: str) -> None:
        """A link something else creates for us (the CNI bridge): deleted on undo."""
        if name not in self.ledger.links:
            self.ledger.links.append(name)
            self._save()

    # undo -----------------------------------------------------------------------------------------
    def undo(self) -> list[str]:
        """Undo everything recorded; returns what could not be undone (empty when the host is clean)."""
        problems: list[str] = []
        roots = tuple(self.ledger.roots)
        for _ in range(3):  # a mount can hide another one below it
            points = mounts_under(roots)
            if not points:
                break
            for point in points:
                if run(["umount", point], check=False).returncode != 0:
                    run(["umount", "-l", point], check=False)
        problems += [f"mount {p} remains" for p in mounts_under(roots)]
        for rel in self.ledger.cgroup_roots:
            problems += _remove_cgroup(rel)
        for link in reversed(self.ledger.links):
            if run(["ip", "link", "show", link], check=False).returncode == 0:
                proc = run(["ip", "link", "delete", link], check=False)
                if proc.returncode != 0:
                    problems.append(f"link {link}: {proc.stderr.strip()}")
        before = set(self.ledger.nft_before)
        if self.ledger.nft_before:
            for table in nft_tables():
                if table not in before:
                    family, _, name = table.partition(" ")
                    proc = run(["nft", "delete", "table", family, name], check=False)
                    if proc.returncode != 0:
                        problems.append(f"nft table {table}: {proc.stderr.strip()}")
        if self.ledger.ipsets_before is not None:  # after the rules that reference them are gone
            for name in ipsets():
                if name not in self.ledger.ipsets_before:
                    proc = run(["ipset", "destroy", name], check=False)
                    if proc.returncode != 0:
                        problems.append(f"ipset {name}: {proc.stderr.strip()}")
        for path, value in self.ledger.sysctls.items():
            try:
                Path(path).write_text(value)
            except OSError as e:
                problems.append(f"sysctl {path}: {e}")
        for p in reversed(self.ledger.paths + self.ledger.roots):
            if os.path.lexists(p):
                with contextlib.suppress(FileNotFoundError):
                    shutil.rmtree(p)
                if os.path.lexists(p):
                    problems.append(f"path {p} remains")
        return problems


CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_hierarchies() -> list[Path]:
    """The mount points of every cgroup hierarchy (v1 controllers and the v2 unified one)."""
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fstype = right.split()[0] if right else ""
            if fstype in ("cgroup", "cgroup2"):
                points.append(Path(left.split()[4]))
    return points


def _remove_cgroup(relative: str) -> list[str]:
    problems = []
    for hierarchy in cgroup_hierarchies():
        top = hierarchy / relative.strip("/")
        if not top.is_dir():
            continue
        dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for d in [*dirs, top]:
            try:
                d.rmdir()
            except OSError as e:
                problems.append(f"cgroup {d}: {e.strerror}")
    return problems


def cgroup_procs(relative: str) -> list[int]:
    """Every process in the cgroup ``relative`` or below it, in any hierarchy."""
    pids: set[int] = set()
    for hierarchy in cgroup_hierarchies():
        top = hierarchy / relative
        if not top.is_dir():
            continue
        for procs_file in top.rglob("cgroup.procs"):
            try:
                pids.update(int(p) for p in procs_file.read_text().split())
            except (OSError, ValueError):
                continue
    return sorted(pids)
