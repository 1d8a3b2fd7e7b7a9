"""The session's Akash devnet: Akash's own node (built from the vendored sources by make test before
pytest), one validator on loopback, brought up once and taken down at the end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from provider.devcluster.akash import AkashDevnet, DevnetState
from provider.devcluster.errors import DevClusterError


@pytest.fixture(scope="session")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AkashDevnet]:
    net = AkashDevnet(tmp_path_factory.mktemp("akash-devnet") / "state")
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
    state = devnet.load()
    assert state is not None
    return state
