"""Shared test helpers: where the read-only shared material lives."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.market.conftest import ChainProcess

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(REPO.parent / "shared")
CORPUS = SHARED / "corpus"


@pytest.fixture(scope="session")
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"shared material not found at {SHARED}; tests need ../shared beside the checkout")
    return SHARED


@pytest.fixture
def chain_proc(tmp_path: Path) -> Iterator[ChainProcess]:
    """A real mock chain server on loopback, fresh state, fast blocks."""
    from tests.market.conftest import ChainProcess, free_port

    cp = ChainProcess(tmp_path / "chain.sqlite", free_port(), block_interval=0.2)
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()
