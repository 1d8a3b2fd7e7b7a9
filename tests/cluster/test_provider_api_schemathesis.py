"""The provider API fuzzed from its own OpenAPI (schemathesis) against a running daemon on the dev
cluster, with valid tenant tokens so requests reach past authentication: no 5xx and no hang."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from provider import tenant as tenant_ops
from provider.api.app import create_app
from provider.api.auth import ChainKeyVerifier, PublicKeys
from provider.chain.client import ChainClient
from provider.chain.keys import Key
from provider.leases.service import LeaseService
from provider.metrics import LeaseMetrics
from provider.money import Dec
from tests.cluster.lifecycle_kit import Daemon, gpu_sdl, tenant_client
from tests.market.conftest import ChainProcess, free_port, funded, run

pytestmark = pytest.mark.cluster


def _openapi() -> dict[str, Any]:
    """The contract the daemon publishes (built from the same app factory; the test checks the served copy)."""
    from prometheus_client import CollectorRegistry

    chain = ChainClient("http://127.0.0.1:9", Key.generate("schema"))
    leases = LeaseService(chain, None, LeaseMetrics(CollectorRegistry()))  # type: ignore[arg-type]

    async def no_status() -> dict[str, Any]:
        return {}

    app = create_app(leases, ChainKeyVerifier(PublicKeys(chain.account_public_key)), no_status)
    return app.openapi()


OPENAPI = _openapi()
schema = schemathesis.openapi.from_dict(OPENAPI)


@pytest.fixture(scope="module")
def target(
    kubeconfig: Path, real_node: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    d_dir = tmp_path_factory.mktemp("api-fuzz")
    chain = ChainProcess(d_dir / "chain.sqlite", free_port(), block_interval=0.2)
    chain.start()
    daemon = Daemon(
        d_dir, kubeconfig, chain, dns_ip=str(real_node["ip"]), api_extra={"client_rate": 5000, "account_rate": 5000}
    )
    try:
        run(funded(chain.url, daemon.key))
        daemon.setup()
        daemon.start()
        assert httpx.get(daemon.url + "/openapi.json").json() == json.loads(json.dumps(OPENAPI))

        async def signed_tenant() -> str:
            c = await tenant_client(chain, Key.generate("fuzzer"))
            await tenant_ops.deploy(c, gpu_sdl("busybox").encode(), "t.yaml", Dec.parse(5_000_000), 7, wait=0)
            token = tenant_ops.token(c, lifetime=900)
            await c.aclose()
            return token

        yield daemon.url, run(signed_tenant())
    finally:
        daemon.stop()
        chain.stop()


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_no_hangs(case: schemathesis.Case, target: tuple[str, str]) -> None:
    url, token = target
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
    response = case.call(base_url=url, timeout=30)
    case.validate_response(response, checks=[not_a_server_error])
