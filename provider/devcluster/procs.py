"""Process supervision for the dev cluster: start a component with its own log, know it is still the
process we started (never signal a PID reused since), and stop a set of them, TERM then KILL."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path


def command_of(pid: int) -> str:
    """The executable a process was started as (argv[0] from /proc), "" when it cannot be read."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0", 1)[0].decode(errors="replace")
    except OSError:
        return ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pids: Iterable[int], timeout: float) -> bool:
    """Wait until none of ``pids`` is alive, reaping those that are our children. True when all are gone."""
    pending = list(pids)
    deadline = time.monotonic() + timeout
    while True:
        for pid in pending:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        pending = [p for p in pending if alive(p)]
        if not pending:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def argv_and_env(pid: int) -> tuple[list[str], dict[str, str]]:
    """A running process's full argv and environment, from /proc (to start it again the same way)."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = [a.decode() for a in f.read().split(b"\0") if a]
    with open(f"/proc/{pid}/environ", "rb") as f:
        env = dict(e.decode(errors="replace").split("=", 1) for e in f.read().split(b"\0") if b"=" in e)
    return argv, env


def start(argv: list[str], log: Path, env: Mapping[str, str] | None = None) -> int:
    """Start ``argv`` in its own session (so its whole process group can be signalled), output to ``log``."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=None if env is None else {**os.environ, **env},
        )
    return proc.pid


def stop(pids: Iterable[int], term_timeout: float = 15.0) -> list[int]:
    """TERM each process group, KILL what is left after ``term_timeout``; returns the PIDs that survived."""
    pending = [p for p in pids if alive(p)]
    for pid in pending:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
    wait_gone(pending, term_timeout)
    for pid in pending:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
    wait_gone(pending, 10)
    return [p for p in pending if alive(p)]


def pids_running(executable: str) -> list[int]:
    """Every process whose argv[0] is ``executable`` (e.g. our containerd shims, which outlive containerd)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and command_of(int(entry)) == executable:
            found.append(int(entry))
    return found


def kill_all(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    wait_gone(pids, 10)
