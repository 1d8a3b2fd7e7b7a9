"""The mock chain's HTTP API fuzzed from its own OpenAPI (schemathesis) against the real server on
loopback: no 5xx and no hang, for every operation, including long-poll and transaction bodies."""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from provider.chain.mock.server import create_app
from provider.chain.mock.state import Chain
from tests.market.conftest import ChainProcess, free_port


def _openapi() -> dict[str, object]:
    """The contract the server publishes (built from the same app; the test checks the served copy)."""
    with tempfile.TemporaryDirectory() as d:
        chain = Chain(Path(d) / "c.sqlite")
        try:
            return create_app(chain).openapi()
        finally:
            chain.close()


OPENAPI = _openapi()
schema = schemathesis.openapi.from_dict(OPENAPI)


@pytest.fixture(scope="module")
def chain_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cp = ChainProcess(tmp_path_factory.mktemp("schemathesis") / "chain.sqlite", free_port(), block_interval=0.5)
    cp.start()
    httpx.post(cp.url + "/faucet", json={"address": "gp1fuzz", "denom": "uakt", "amount": "1000"})
    try:
        assert httpx.get(cp.url + "/openapi.json").json() == json.loads(json.dumps(OPENAPI))
        yield cp.url
    finally:
        cp.stop()


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_no_hangs(case: schemathesis.Case, chain_url: str) -> None:
    if case.query and "wait" in case.query:
        with contextlib.suppress(TypeError, ValueError):  # a long poll answers within its wait: keep it quick
            case.query["wait"] = min(float(case.query["wait"]), 1.0)
    response = case.call(base_url=chain_url, timeout=15)  # a hang fails the test instead of blocking the suite
    case.validate_response(response, checks=[not_a_server_error])
