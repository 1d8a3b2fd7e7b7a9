"""Orphan cleanup against the dev cluster and the mock chain: a lease namespace goes only when the chain
we are connected to positively reports that lease closed, after the grace period; never for a reset
chain, another chain, another provider key, an unknown lease or an unreachable chain; dry-run only
reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from provider import tenant as tenant_ops
from provider.chain.client import ChainClient
from provider.chain.keys import Key
from provider.chain.types import BidId, Coin, LeaseId, OrderId
from provider.deploy.builder import DeploySettings, LeaseRef, base_labels
from provider.deploy.deployer import Deployer, path_of
from provider.deploy.naming import FIELD_MANAGER, namespace_for
from provider.kube import Kube
from provider.leases.reaper import OrphanReaper, ReaperSettings
from provider.metrics import LeaseMetrics
from provider.money import Dec
from tests.cluster.lifecycle_kit import gpu_sdl
from tests.market.conftest import BID_DEPOSIT, ChainProcess, free_port, funded, run

pytestmark = pytest.mark.cluster


async def _lease(tenant: ChainClient, prov: ChainClient, dseq: int) -> LeaseId:
    await tenant_ops.deploy(tenant, gpu_sdl("busybox").encode(), "t.yaml", Dec.parse(50_000_000), dseq, wait=0)
    oid = OrderId(tenant.address, dseq, 1, 1)
    if await prov.provider(prov.address) is None:
        await prov.register_provider({"host": "gpu-provider"}, "http://127.0.0.1:8443")
    await prov.create_bid(oid, Coin("uact", Dec.parse(1000)), BID_DEPOSIT)
    lease = BidId(oid, prov.address)
    await tenant_ops.accept(tenant, str(lease))
    return lease


def _namespace(kube: Kube, ref: LeaseRef) -> str:
    name = namespace_for(ref.id)
    obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": base_labels(ref)}}
    kube.apply(path_of(obj), obj, FIELD_MANAGER)
    return name


def _exists(kube: Kube, name: str) -> bool:
    found = [n for n, _ in Deployer(kube, DeploySettings(), "unused").lease_namespaces() if n == name]
    return bool(found)


def _gauge(metrics: LeaseMetrics, state: str) -> float:
    value: float = metrics.orphans.labels(state=state)._value.get()
    return value


def test_only_leases_the_chain_reports_closed_are_cleaned_up(
    kubeconfig: Path, chain_proc: ChainProcess, tmp_path: Path
) -> None:
    kube = Kube(str(kubeconfig))
    deployer = Deployer(kube, DeploySettings(), "unused")

    async def go() -> None:
        tenant = await funded(chain_proc.url, Key.generate("tenant"))
        prov = await funded(chain_proc.url, Key.generate("provider"))
        status = await prov.status()
        ref = lambda lease: LeaseRef(lease, status.chain_id, status.genesis)  # noqa: E731
        active = await _lease(tenant, prov, 1)
        closed = await _lease(tenant, prov, 2)
        await tenant_ops.close(tenant, 2)
        unknown = BidId(OrderId(tenant.address, 99, 1, 1), prov.address)
        someone_elses = BidId(OrderId(tenant.address, 2, 1, 1), Key.generate("other").address)
        names: dict[str, str] = {
            "active": _namespace(kube, ref(active)),
            "closed": _namespace(kube, ref(closed)),
            "unknown": _namespace(kube, ref(unknown)),
            "other provider": _namespace(kube, ref(someone_elses)),
        }
        other_chain = BidId(OrderId(tenant.address, 3, 1, 1), prov.address)
        names["other chain"] = _namespace(kube, LeaseRef(other_chain, "gpu-devnet-2", "f" * 63))
        try:
            by_name = {v: k for k, v in names.items()}

            def verdicts(found: list[Any]) -> dict[str, tuple[str, str]]:
                return {by_name[v.namespace]: (v.action, v.reason) for v in found if v.namespace in by_name}

            # dry run: the closed lease's namespace would go; nothing is deleted
            metrics = LeaseMetrics(CollectorRegistry())
            dry = OrphanReaper(prov, deployer, metrics, ReaperSettings(grace_seconds=0, dry_run=True))
            seen = verdicts(await dry.sweep())
            assert seen == {
                "active": ("keep", "active"),
                "closed": ("would_delete", "closed"),
                "unknown": ("keep", "unknown_lease"),
                "other provider": ("keep", "other_provider"),
                "other chain": ("keep", "other_chain"),
            }
            assert _gauge(metrics, "would_delete") == 1
            assert all(_exists(kube, n) for n in names.values())

            # a lease the lease service holds is never looked at, whatever the chain says
            held = OrphanReaper(prov, deployer, metrics, ReaperSettings(grace_seconds=0), live=lambda: {closed})
            assert verdicts(await held.sweep())["closed"] == ("keep", "live")
            assert _exists(kube, names["closed"])

            # the grace period: closed is waited for first, then deleted
            now = [1000.0]
            reaper = OrphanReaper(prov, deployer, metrics, ReaperSettings(grace_seconds=60), clock=lambda: now[0])
            assert verdicts(await reaper.sweep())["closed"] == ("keep", "grace")
            assert _gauge(metrics, "waiting") == 1 and _exists(kube, names["closed"])
            now[0] += 61
            assert verdicts(await reaper.sweep())["closed"] == ("delete", "closed")
            assert metrics.orphans_deleted._value.get() == 1
            assert not _exists(kube, names["closed"])
            assert all(_exists(kube, names[k]) for k in ("active", "unknown", "other provider", "other chain"))

            # run with another key: none of them is ours
            stranger = ChainClient(chain_proc.url, Key.generate("stranger"))
            other_key = OrphanReaper(stranger, deployer, metrics, ReaperSettings(grace_seconds=0))
            assert {a for a, _ in verdicts(await other_key.sweep()).values()} == {"keep"}
            await stranger.aclose()

            # the chain does not answer: nothing is judged, nothing deleted
            gone = ChainClient(f"http://127.0.0.1:{free_port()}", prov.key)
            blind = OrphanReaper(gone, deployer, metrics, ReaperSettings(grace_seconds=0))
            assert await blind.sweep() == []
            await gone.aclose()
        finally:
            for name in names.values():
                if _exists(kube, name):
                    kube.request("DELETE", f"/api/v1/namespaces/{name}", what="cleanup")
            await tenant.aclose()
            await prov.aclose()

    run(go())


def test_a_reset_chain_leaves_every_namespace_alone(kubeconfig: Path, tmp_path: Path) -> None:
    kube = Kube(str(kubeconfig))
    deployer = Deployer(kube, DeploySettings(), "unused")
    prov_key = Key.generate("provider")
    first = ChainProcess(tmp_path / "a.sqlite", free_port(), block_interval=0.2)
    first.start()
    names: list[str] = []
    try:

        async def before() -> None:
            tenant = await funded(first.url, Key.generate("tenant"))
            prov = await funded(first.url, prov_key)
            status = await prov.status()
            for dseq in (1, 2):
                lease = await _lease(tenant, prov, dseq)
                names.append(_namespace(kube, LeaseRef(lease, status.chain_id, status.genesis)))
            await tenant_ops.close(tenant, 1)  # closed on the old chain, too
            await tenant.aclose()
            await prov.aclose()

        run(before())
    finally:
        first.stop()
    # the same chain id, a fresh genesis: a reset
    (tmp_path / "a.sqlite").unlink()
    reset = ChainProcess(tmp_path / "a.sqlite", free_port(), block_interval=0.2)
    reset.start()
    try:

        async def after() -> None:
            prov = await funded(reset.url, prov_key)
            metrics = LeaseMetrics(CollectorRegistry())
            reaper = OrphanReaper(prov, deployer, metrics, ReaperSettings(grace_seconds=0))
            verdicts = {v.namespace: (v.action, v.reason) for v in await reaper.sweep() if v.namespace in names}
            assert verdicts == {n: ("keep", "other_chain") for n in names}
            assert metrics.orphans_deleted._value.get() == 0
            await prov.aclose()

        run(after())
        assert all(_exists(kube, n) for n in names)
    finally:
        reset.stop()
        for name in names:
            kube.request("DELETE", f"/api/v1/namespaces/{name}", what="cleanup")
