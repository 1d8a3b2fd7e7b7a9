"""`gpu-provider demo` end to end on the session's dev cluster: every step of the flow is narrated and the
escrow settles to the unit (the demo checks it and fails otherwise)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from provider.devcluster import DevCluster
from tests.market.conftest import REPO

pytestmark = pytest.mark.cluster


def test_the_demo_runs_the_whole_flow(devcluster: DevCluster | None) -> None:
    assert devcluster is not None, "the demo runs on the session's own dev cluster"
    done = subprocess.run(
        [sys.executable, "-m", "provider.cli", "demo", "--state-dir", str(devcluster.dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    steps = [line.split("]", 1)[1].split()[0] for line in out.splitlines() if line.startswith("[")]
    for step in ("chain", "provider", "order", "bid", "lease", "manifest", "pods", "ready", "closed", "escrow", "done"):
        assert step in steps, (step, out)
    assert "settled to the unit" in out
    assert "vllm     1/1" in out and ".ingress.localhost" in out  # the status table
    assert Path(devcluster.dir).exists()  # the cluster keeps running
