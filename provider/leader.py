"""Leader election on a ``coordination.k8s.io/v1`` Lease, the way client-go's leaderelection does it.

Several replicas of the daemon run at once; only the one holding the Lease bids, deploys, withdraws and
closes (the leader work). Every replica serves the API. The rules:

- A replica takes the Lease when nobody holds it, or when the holder has not renewed it for
  ``lease_seconds`` as measured on *our* clock since we last saw the record change (no trust in the other
  replica's wall clock). Every write carries the resourceVersion it read, so two replicas can never both
  win one round: the API server refuses the second with 409.
- The leader renews every ``retry_seconds``. If it cannot renew for ``renew_seconds`` (< lease_seconds)
  it stops leading before any standby can take over: its leader work is halted and the daemon exits, so
  a replica never acts on a leadership it may have lost (kube-controller-manager does the same).
- A leader shutting down halts its work first, then releases the Lease (empty holder, 1 s duration), so
  a standby takes over at its next try rather than after a whole lease period.

The API calls go through a small port (``LeaseApi``), so this module has no Kubernetes client in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from provider.errors import KubeError, ProviderError

log = logging.getLogger("provider.leader")


class LeaseApi(Protocol):
    """Path-based JSON requests to the API server (``provider.kube.Kube.request``)."""

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
        what: str = "",
        timeout: float = 30.0,
    ) -> Any: ...


@dataclass(frozen=True, slots=True)
class LeaderSettings:
    namespace: str
    name: str = "gpu-provider-leader"
    identity: str = ""  # "" = default_identity()
    lease_seconds: float = 10.0  # a standby takes over this long after the leader's last renewal
    renew_seconds: float = 7.0  # the leader gives up when it could not renew for this long
    retry_seconds: float = 2.0  # how often a standby tries, and a leader renews


class LeadershipLostError(ProviderError):
    """The Lease could not be renewed in time: another replica may lead now."""


def default_identity() -> str:
    """The pod's name (the chart sets POD_NAME) or the host name, plus a random suffix: a restarted
    container is a new candidate, never mistaken for the old holder."""
    base = os.environ.get("POD_NAME") or socket.gethostname() or "gpu-provider"
    return f"{base}_{uuid.uuid4().hex[:8]}"


def _now_micro() -> str:
    """Kubernetes MicroTime: RFC 3339 with microseconds, UTC."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        api: LeaseApi,
        settings: LeaderSettings,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.api = api
        self.settings = settings
        self.identity = settings.identity or default_identity()
        self.clock = clock
        self.on_change = on_change
        self.leading = False
        self.holder = ""  # the holder we last observed (ourselves when leading)
        self._observed: dict[str, Any] | None = None  # the spec we last observed
        self._observed_at = 0.0
        # renewals never wait behind the daemon's other blocking work in the default executor
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="leader-election")

    @property
    def path(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.settings.namespace}/leases/{self.settings.name}"

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        timeout = max(1.0, min(10.0, self.settings.renew_seconds / 2))
        return self.api.request(method, path, body, what=f"leader election ({method} Lease)", timeout=timeout)

    # -- one round (blocking; runs on the elector's own thread) ------------------------------------------
    def try_acquire_or_renew(self) -> bool:
        """One attempt to take or keep the Lease. True when we hold it afterwards."""
        s = self.settings
        now = _now_micro()
        try:
            current = self._request("GET", self.path)
        except KubeError as e:
            if e.status != 404:
                raise
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": s.name, "namespace": s.namespace},
                "spec": self._spec(now, now, 0),
            }
            try:
                created = self._request("POST", self.path.rsplit("/", 1)[0], body)
            except KubeError as e2:
                if e2.status == 409:  # another replica created it first
                    return False
                raise
            self._observe(created["spec"])
            return True
        spec = dict(current.get("spec") or {})
        if spec != self._observed:
            self._observe(spec)
        holder = str(spec.get("holderIdentity") or "")
        duration = float(spec.get("leaseDurationSeconds") or 0)
        mine = holder == self.identity
        if holder and not mine and self.clock() < self._observed_at + duration:
            self.holder = holder
            return False  # held by a live leader
        transitions = int(spec.get("leaseTransitions") or 0)
        acquired = str(spec.get("acquireTime") or now) if mine else now
        new_spec = self._spec(acquired, now, transitions if mine else transitions + 1)
        body = {**current, "spec": new_spec}  # metadata.resourceVersion is what we read: a race is a 409
        try:
            updated = self._request("PUT", self.path, body)
        except KubeError as e:
            if e.status == 409:
                return False
            raise
        self._observe(updated["spec"])
        return True

    def _spec(self, acquired: str, renewed: str, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.settings.lease_seconds)),
            "acquireTime": acquired,
            "renewTime": renewed,
            "leaseTransitions": transitions,
        }

    def _observe(self, spec: dict[str, Any]) -> None:
        self._observed = dict(spec)
        self._observed_at = self.clock()
        self.holder = str(spec.get("holderIdentity") or "")

    def release(self) -> bool:
        """Give the Lease up (only if we hold it): the next standby try takes it."""
        try:
            current = self._request("GET", self.path)
            spec = dict(current.get("spec") or {})
            if spec.get("holderIdentity") != self.identity:
                return False
            now = _now_micro()
            current["spec"] = {
                **spec,
                "holderIdentity": None,
                "leaseDurationSeconds": 1,
                "renewTime": now,
                "acquireTime": now,
            }
            self._request("PUT", self.path, current)
            return True
        except KubeError as e:
            log.warning("leader lease not released; a standby takes over when it expires error=%r", str(e)[:300])
            return False

    # -- the loop ---------------------------------------------------------------------------------------
    async def _round(self) -> bool:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self.try_acquire_or_renew)
        except ProviderError as e:
            log.warning("leader election round failed error=%r", str(e)[:300])
            return False

    def _set_leading(self, leading: bool) -> None:
        if leading != self.leading:
            self.leading = leading
            if self.on_change is not None:
                self.on_change(leading)

    async def run(self, lead: Callable[[asyncio.Event], Coroutine[Any, Any, None]], stop: asyncio.Event) -> None:
        """Wait for the Lease, then run ``lead(halt)`` while we hold it. ``halt`` is set when ``stop`` is
        set (then the Lease is released once ``lead`` returns) or when renewal fails for ``renew_seconds``
        (then LeadershipLostError is raised once ``lead`` returns). Returns when stopped."""
        s = self.settings
        log.info("waiting to lead identity=%s lease=%s/%s", self.identity, s.namespace, s.name)
        last_holder = ""
        while not stop.is_set():
            if await self._round():
                break
            if self.holder != last_holder:
                last_holder = self.holder
                log.info("standing by leader=%s", self.holder or "(none)")
            await _wait(stop, s.retry_seconds)
        if stop.is_set():
            self._executor.shutdown(wait=False)
            return
        renewed_at = self.clock()
        self._set_leading(True)
        log.warning("leading now identity=%s", self.identity)
        halt = asyncio.Event()
        work = asyncio.create_task(lead(halt))
        lost = False
        try:
            # Renew until the work is done. After a stop the work is halted, and renewing goes on while it
            # winds down (applies and handlers in flight finish): no standby may lead while we still act.
            while not work.done():
                await _wait_any(None if halt.is_set() else stop, work, s.retry_seconds)
                if stop.is_set() and not halt.is_set():
                    log.info("stopping: halting leader work, still holding the lease until it is done")
                    halt.set()
                if work.done():
                    break
                if await self._round():
                    renewed_at = self.clock()
                elif self.clock() - renewed_at >= s.renew_seconds:
                    lost = True
                    log.error(
                        "leadership lost: the lease was not renewed for %.1fs, stopping all leader work "
                        "identity=%s holder=%s",
                        self.clock() - renewed_at,
                        self.identity,
                        self.holder or "(unknown)",
                    )
                    break
        finally:
            halt.set()
            if lost:  # a standby may lead once our lease runs out: the work gets until shortly before that
                grace = max(0.1, (s.lease_seconds - s.renew_seconds) / 2)
                _, pending = await asyncio.wait({work}, timeout=grace)
                for task in pending:
                    task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
            self._set_leading(False)
            if not lost:
                loop = asyncio.get_running_loop()
                released = await loop.run_in_executor(self._executor, self.release)
                log.info("leadership released=%s identity=%s", released, self.identity)
            self._executor.shutdown(wait=False)
        if lost:
            raise LeadershipLostError(
                "leadership lost: the leader lease could not be renewed in time; exiting so this replica "
                "restarts as a standby"
            )


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _wait_any(stop: asyncio.Event | None, work: asyncio.Task[None], seconds: float) -> None:
    """Up to ``seconds``; sooner when ``work`` ends or ``stop`` (if given) is set."""
    stopper = asyncio.ensure_future(stop.wait()) if stop is not None else None
    try:
        waiters: set[asyncio.Future[Any]] = {work} if stopper is None else {work, stopper}
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if stopper is not None:
            stopper.cancel()
