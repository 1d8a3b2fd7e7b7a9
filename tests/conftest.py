"""Shared test helpers: where the read-only shared material lives."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from provider.devcluster.akash import NodeShape

if TYPE_CHECKING:
    from provider.devcluster.akash import AkashDevnet, DevnetState
    from tests.market.conftest import ChainProcess

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(REPO.parent / "shared")
CORPUS = SHARED / "corpus"
# the session devnet: a chain exported and restarted (genesis above height 1) on a node that prunes blocks
# older than 25 (min-retain-blocks, the evidence window cut to match), as mainnet nodes are
SESSION_NODE_SHAPE = NodeShape(initial_height=1000, retain_blocks=25)


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


@pytest.fixture(scope="session")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AkashDevnet]:
    """The session's Akash devnet (Akash's own node, built by make test before pytest): one validator on
    loopback, brought up when a test first asks for it and taken down at the end. Shaped like a mainnet
    node rather than a fresh chain (SESSION_NODE_SHAPE): its genesis starts above height 1 and it prunes
    old blocks, so every Akash test runs where the real network's nodes are."""
    from provider.devcluster.akash import AkashDevnet
    from provider.devcluster.errors import DevClusterError

    net = AkashDevnet(tmp_path_factory.mktemp("akash-devnet") / "state", SESSION_NODE_SHAPE)
    try:
        net.up(timeout=300)
    except DevClusterError as e:
        net.down()
        pytest.fail(f"the Akash devnet could not start: {e}", pytrace=False)
    try:
        yield net
    finally:
        net.down()


@pytest.fixture(scope="session")
def chain(devnet: AkashDevnet) -> DevnetState:
    """The devnet's endpoints, keys and the keys' mnemonics."""
    state = devnet.load()
    assert state is not None
    return state
