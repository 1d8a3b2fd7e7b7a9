"""The bid engine against the real dev cluster inventory and the real mock chain."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from provider.bidding.engine import BidEngine, EngineConfig
from provider.bidding.pricing import LinearPricing
from provider.chain.keys import Key
from provider.inventory.reservations import Reservations
from provider.inventory.service import ClusterInventory
from provider.kube import Kube
from provider.metrics import BidMetrics
from tests.market.conftest import ChainProcess, funded, run, running, wait_until
from tests.market.test_flow import deployment_msg

pytestmark = pytest.mark.cluster


def test_engine_bids_from_the_cluster_inventory(kubeconfig: Path, chain_proc: ChainProcess, tmp_path: Path) -> None:
    async def go() -> None:
        tenant = await funded(chain_proc.url, Key.generate("tenant"))
        prov = await funded(chain_proc.url, Key.generate("provider"))
        inventory = ClusterInventory(Kube(str(kubeconfig)), Reservations({"beta3": 10 * 1024**4}))
        registry = CollectorRegistry()
        engine = BidEngine(
            prov,
            inventory,
            LinearPricing(),
            EngineConfig(tmp_path, {"host": "gpu-provider"}, feed_wait=0.5),
            BidMetrics(registry),
        )
        async with running(engine):
            info = await prov.provider(prov.key.address)
            assert info is not None
            assert info.attributes["capabilities/gpu/vendor/nvidia/model/h100"] == "true"
            assert info.attributes["capabilities/gpu/vendor/nvidia/model/a100/ram/80Gi/interface/sxm"] == "true"
            await tenant.submit("deployment.create", deployment_msg(1, 5_000_000, gpus=1))  # one H100
            await tenant.submit("deployment.create", deployment_msg(2, 5_000_000, gpus=9))  # no node has 9
            await wait_until(lambda: tenant.bids(owner=tenant.key.address, dseq=1))  # type: ignore[union-attr]
            hold = inventory.reservations.get(f"{tenant.key.address}/1/1/1")  # type: ignore[union-attr]
            assert hold is not None and hold.placements[0].node.startswith("sim-h100-")
            await wait_until(lambda: _skipped(registry, "insufficient_gpu"))
            assert await tenant.bids(owner=tenant.key.address, dseq=2) == []  # type: ignore[union-attr]
        await tenant.aclose()
        await prov.aclose()

    run(go())


async def _skipped(registry: CollectorRegistry, reason: str) -> bool:
    value = registry.get_sample_value("gpu_provider_orders_skipped_total", {"reason": reason})
    return bool(value)
