"""Funds on a real lease: our periodic withdrawal pays the provider while the lease is still active, and
closing settles the escrow to the unit (the tenant paid exactly what the provider received)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provider import tenant as tenant_ops
from provider.chain.client import ChainClient
from provider.chain.keys import Key
from provider.money import Dec
from tests.cluster.lifecycle_kit import Daemon, daemon_running, gpu_sdl, lease_on, poll, tenant_client
from tests.market.conftest import ChainProcess, run

pytestmark = pytest.mark.cluster


@pytest.fixture
def daemon(kubeconfig: Path, chain_proc: ChainProcess, real_node: dict[str, Any], tmp_path: Path) -> Iterator[Daemon]:
    with daemon_running(
        kubeconfig, chain_proc, real_node, tmp_path, deploy_extra={"withdrawal_period_seconds": 1}
    ) as d:
        yield d


async def _balance(chain: ChainClient, address: str, denom: str) -> Dec:
    balances = (await chain.account(address))["balances"]
    return Dec.parse(balances.get(denom, "0"))


def test_withdrawals_pay_while_active_and_close_settles_to_the_unit(
    daemon: Daemon, chain_proc: ChainProcess, real_node: dict[str, Any]
) -> None:
    async def go() -> None:
        tenant = await tenant_client(chain_proc, Key.generate("tenant"))
        tenant_before = await _balance(tenant, tenant.address, "uact")
        provider_before = await _balance(tenant, daemon.key.address, "uact")
        await lease_on(tenant, gpu_sdl(real_node["busybox"]), 501, daemon.key.address)

        async def withdrawn_while_active() -> Any:
            (row,) = await tenant.lease_rows(owner=tenant.address, dseq=501)
            return row if row["state"] == "active" and Dec.parse(row["withdrawn"]) else None

        row = await poll(withdrawn_while_active, 60, 0.3)
        paid_so_far = Dec.parse(row["withdrawn"])
        # already in the provider's account (a later withdrawal may have landed since the row was read)
        assert await _balance(tenant, daemon.key.address, "uact") - provider_before >= paid_so_far
        # more than one withdrawal happens while it runs (each pays what accrued since the last)

        async def withdrawn_again() -> bool:
            (again,) = await tenant.lease_rows(owner=tenant.address, dseq=501)
            return again["state"] == "active" and Dec.parse(again["withdrawn"]).atto > paid_so_far.atto

        await poll(withdrawn_again, 60, 0.3)

        await tenant_ops.close(tenant, 501)
        (closed,) = await tenant.lease_rows(owner=tenant.address, dseq=501)
        assert closed["state"] == "closed" and Dec.parse(closed["unsettled"]) == Dec.parse(0)
        total = Dec.parse(closed["withdrawn"])
        blocks = closed["closed_height"] - closed["created_height"]
        assert total == Dec.parse(closed["price"]).times(blocks)  # every block paid, once
        deployment = await tenant.account_deployment(tenant.address, 501)
        assert deployment is not None and Dec.parse(deployment["escrow"]["amount"]) == Dec.parse(0)
        # to the unit: what left the tenant is exactly what reached the provider
        assert tenant_before - await _balance(tenant, tenant.address, "uact") == total
        assert await _balance(tenant, daemon.key.address, "uact") - provider_before == total
        await tenant.aclose()

    run(go())
    assert "lease earnings withdrawn" in daemon.logs()
