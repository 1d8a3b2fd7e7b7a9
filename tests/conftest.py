"""Shared test helpers: where the read-only shared material lives."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(REPO.parent / "shared")
CORPUS = SHARED / "corpus"


@pytest.fixture(scope="session")
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"shared material not found at {SHARED}; tests need ../shared beside the checkout")
    return SHARED
