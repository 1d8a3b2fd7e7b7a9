"""Leader election against the dev cluster's real API server (a coordination.k8s.io Lease): one leader at
a time, a standby takes over when the leader dies or releases, a write on a stale read loses (409), and a
leader that cannot renew halts its work and says so."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from provider.errors import KubeError
from provider.kube import Kube
from provider.leader import LeaderElector, LeaderSettings, LeadershipLostError
from tests.market.conftest import run

pytestmark = pytest.mark.cluster

FAST = {"lease_seconds": 3.0, "renew_seconds": 2.0, "retry_seconds": 0.3}


def _elector(kube: Any, namespace: str, identity: str, **timings: float) -> LeaderElector:
    return LeaderElector(kube, LeaderSettings(namespace, "leader-test", identity, **{**FAST, **timings}))


class Worker:
    """Leader work that records when it ran and stops when halted."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.halted = False

    async def __call__(self, halt: asyncio.Event) -> None:
        self.started.set()
        await halt.wait()
        self.halted = True


async def _until(check: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def _lease(kube: Kube, namespace: str) -> dict[str, Any]:
    spec: dict[str, Any] = kube.request(
        "GET", f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/leader-test"
    )["spec"]
    return spec


class Partitioned:
    """The real API until ``cut``; then every request fails like a lost network (a replica that died or
    was cut off: it neither renews nor releases)."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.cut = False

    def request(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        if self.cut:
            raise KubeError("cannot reach the Kubernetes API (test partition)")
        return self.kube.request(method, path, body, **kw)


def test_one_leader_and_the_standby_takes_over_on_release_and_on_death(kubeconfig: Path, namespace: str) -> None:
    kube = Kube(str(kubeconfig))
    b_api = Partitioned(kube)

    async def go() -> None:
        a, b = _elector(kube, namespace, "a"), _elector(b_api, namespace, "b")
        wa, wb = Worker(), Worker()
        stop_a, stop_b = asyncio.Event(), asyncio.Event()
        ta = asyncio.create_task(a.run(wa, stop_a))
        await asyncio.wait_for(wa.started.wait(), 30)
        tb = asyncio.create_task(b.run(wb, stop_b))
        await asyncio.sleep(FAST["lease_seconds"] * 2)  # several of b's tries while a keeps renewing
        assert a.leading and not b.leading and not wb.started.is_set()
        assert b.holder == "a" and _lease(kube, namespace)["holderIdentity"] == "a"

        # a shuts down: its work halts first, then it releases, and b leads at its next try
        stop_a.set()
        await ta
        assert wa.halted and not a.leading
        await asyncio.wait_for(wb.started.wait(), 10)
        spec = _lease(kube, namespace)
        assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1

        # a comes back as a standby; b dies without releasing: a takes over once b's renewals stop
        a2, wa2, stop_a2 = _elector(kube, namespace, "a2"), Worker(), asyncio.Event()
        ta2 = asyncio.create_task(a2.run(wa2, stop_a2))
        await asyncio.sleep(FAST["retry_seconds"] * 3)
        assert not wa2.started.is_set()
        b_api.cut = True  # b neither renews nor releases from now on
        died = time.monotonic()
        await asyncio.wait_for(wa2.started.wait(), 30)
        took = time.monotonic() - died
        # safety, not speed: never while b's last renewal (at most one retry before the cut) is still valid
        assert took >= FAST["renew_seconds"]
        assert _lease(kube, namespace)["holderIdentity"] == "a2"
        with pytest.raises(LeadershipLostError):  # b found out by itself, and halted its work
            await tb
        assert wb.halted
        stop_a2.set()
        await ta2

    run(go())


def test_a_write_on_a_stale_read_loses(kubeconfig: Path, namespace: str) -> None:
    """Two replicas read the same expired Lease; the API server's resourceVersion check lets only the
    first write win, so both can never lead at once."""
    kube = Kube(str(kubeconfig))
    a = _elector(kube, namespace, "a")
    assert a.try_acquire_or_renew()
    a.release()

    class Interleaved:
        """The real API, with b's whole round slipped in between c's read and c's write."""

        def request(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
            if method == "PUT":
                assert b.try_acquire_or_renew()
            return kube.request(method, path, body, **kw)

    b = _elector(kube, namespace, "b")
    c = _elector(Interleaved(), namespace, "c")
    assert c.try_acquire_or_renew() is False
    assert _lease(kube, namespace)["holderIdentity"] == "b"
    assert not c.try_acquire_or_renew()  # b holds it, and renews: c stands by


def test_a_leader_that_cannot_renew_halts_its_work_and_raises(kubeconfig: Path, namespace: str) -> None:
    kube = Kube(str(kubeconfig))
    api = Partitioned(kube)

    async def go() -> None:
        a = _elector(api, namespace, "a")
        work, stop = Worker(), asyncio.Event()
        task = asyncio.create_task(a.run(work, stop))
        await asyncio.wait_for(work.started.wait(), 30)
        api.cut = True
        with pytest.raises(LeadershipLostError):
            await asyncio.wait_for(task, 30)
        assert work.halted and not a.leading
        # it gave up before its lease ran out: a standby could take over only after the leader stopped
        b, wb = _elector(kube, namespace, "b"), Worker()
        stop_b = asyncio.Event()
        tb = asyncio.create_task(b.run(wb, stop_b))
        await asyncio.wait_for(wb.started.wait(), 30)
        stop_b.set()
        await tb

    run(go())
