"""The lease lifecycle: won -> manifest -> deploying -> ready (or degraded / failed) -> closed.

The bid engine hands won and closed leases over through a queue (it never waits for a deploy). The
manifest intake checks a tenant's manifest against the chain, stores it durably in the cluster and
queues the deploy. A watchdog closes our side of a lease that got no manifest within
``manifest_timeout_blocks``. A monitor pass keeps each lease's state and the deploy-duration metric.
State lives on the chain and in the cluster: ``start`` rebuilds every lease from them, so a kill -9
at any point converges on restart (applies are idempotent server-side applies).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from provider.chain.port import ChainError, ChainPort
from provider.chain.types import ChainStatus, LeaseId, Order, OrderId
from provider.deploy.builder import LeaseRef, hosts_of
from provider.deploy.deployer import Deployer, LeaseObservation, StoredManifest
from provider.errors import KubeError, ProviderError
from provider.metrics import LEASE_STATES, LeaseMetrics
from sdl import spec as s
from sdl.manifest import ManifestError, check_group, manifest_from_json, services_changed, version_of
from sdl.spec import group_from_json

log = logging.getLogger("provider.leases")


class ManifestRefusedError(ProviderError):
    """A manifest the provider will not deploy: ``status`` is the HTTP status, ``reason`` a metric label."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class LeaseSettings:
    manifest_timeout_blocks: int = 50
    blocked_hostnames: tuple[str, ...] = ()  # exact names, or ".suffix" for a whole domain
    tick_seconds: float = 2.0
    concurrency: int = 16  # leases deployed at once
    withdrawal_period_seconds: float = 3600.0  # each active lease's earnings are withdrawn this often; 0 = never
    close_failed_after_seconds: float = 0.0  # close our side of a lease failed for a tenant-side cause; 0 = never
    sync_seconds: float = 0.0  # HA: re-read stored manifests (and, on a standby, the chain's leases) this often


@dataclass
class LeaseRecord:
    id: LeaseId
    won_height: int
    state: str = "awaiting_manifest"
    version: str = ""
    group: s.ManifestGroup | None = None
    accepted_at: float = 0.0
    measured: bool = False
    error: str = ""  # our own (provider-side) last error, shown to the tenant without internals
    observed: LeaseObservation | None = None
    withdrawn_at: float = field(default_factory=time.monotonic)  # the last withdrawal (or when we learnt of it)
    failed_since: float = 0.0  # when it entered "failed" (a tenant-side cause), 0 while it is not failed
    pod_genesis: str = ""  # the older chain identity its pods keep (see LeaseRef.pod_genesis); "" = current


class LeaseService:
    def __init__(
        self,
        chain: ChainPort,
        deployer: Deployer,
        metrics: LeaseMetrics,
        settings: LeaseSettings | None = None,
        height: Callable[[], int] | None = None,
    ) -> None:
        self.chain = chain
        self.deployer = deployer
        self.metrics = metrics
        self.settings = settings or LeaseSettings()
        self.me = chain.address
        self.records: dict[LeaseId, LeaseRecord] = {}
        self.chain_id = ""
        self.genesis = ""
        self.status: ChainStatus | None = None
        self.ready = False
        self._height = height
        self._queue: asyncio.Queue[tuple[str, LeaseId]] = asyncio.Queue()
        self._locks: dict[LeaseId, asyncio.Lock] = {}
        self._slots = asyncio.Semaphore(self.settings.concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Event()  # the watch cache saw a lease namespace change
        # Only the leader acts (deploys, tears down, closes, withdraws). A standby (HA, not leading) keeps
        # its records in step from the chain and the stored manifests and serves the API from them.
        self.leading = True

    # -- hand-over from the bid engine (never blocks it) -----------------------------------------
    async def lease_won(self, lease: LeaseId, order: Order) -> None:
        self._queue.put_nowait(("won", lease))

    async def lease_closed(self, lease: LeaseId) -> None:
        self._queue.put_nowait(("closed", lease))

    def namespace_changed(self, namespace: str) -> None:
        """Called by the watch cache (on its thread): wake the monitor for an early pass."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._changed.set)

    def live(self) -> set[LeaseId]:
        """The leases this service holds (the orphan sweep never touches their namespaces)."""
        return set(self.records)

    def ref(self, lease: LeaseId) -> LeaseRef:
        rec = self.records.get(lease)
        return LeaseRef(lease, self.chain_id, self.genesis, rec.pod_genesis if rec is not None else "")

    def _take_stored(self, rec: LeaseRecord, stored: StoredManifest) -> None:
        """A stored manifest into its record, with the identity its pods were built under: an older name
        of this chain (an install from before the identity changed) stays on the pod templates."""
        rec.version, rec.group = stored.version, stored.group
        if stored.pod_genesis:  # recorded when the lease moved: kept for good (the node may prune the alias away)
            rec.pod_genesis = stored.pod_genesis
        elif stored.genesis != self.genesis[:63] and self.status is not None and self.status.names(stored.genesis):
            rec.pod_genesis = stored.genesis

    # -- start-up: rebuild from the chain and the cluster ---------------------------------------
    async def start(self) -> None:
        problem = await asyncio.to_thread(self.deployer.check_installed)
        if problem is not None:
            raise ProviderError(problem)
        status = await self.chain.status()
        self.chain_id, self.genesis, self.status = status.chain_id, status.genesis, status
        for lease in await self.chain.leases(provider=self.me, state="active"):
            self.records.setdefault(lease.id, LeaseRecord(lease.id, lease.created_height))
        for stored in await asyncio.to_thread(self.deployer.stored):
            on_chain = await self.chain.lease(stored.lease)
            if on_chain is None:  # the chain does not know it (reset, another chain): leave it alone
                log.warning("stored manifest of a lease the chain does not know, left alone lease=%s", stored.lease)
                continue
            if on_chain.state != "active":
                self._queue.put_nowait(("closed", stored.lease))
                continue
            rec = self.records.setdefault(stored.lease, LeaseRecord(stored.lease, on_chain.created_height))
            self._take_stored(rec, stored)
            rec.state, rec.accepted_at = "deploying", time.monotonic()
            if stored.genesis != status.genesis[:63] and status.names(stored.genesis):
                # stored under an older name of this chain: the record moves to the current one (its pods
                # keep theirs), and the deploy below moves every object's label
                await asyncio.to_thread(self.deployer.store, self.ref(stored.lease), stored.version, stored.group_json)
                log.info("lease moved to the chain's current identity lease=%s old=%s", stored.lease, stored.genesis)
            self._queue.put_nowait(("deploy", stored.lease))
        self.ready = True
        self._publish()
        log.info("lease service started leases=%d", len(self.records))

    # -- the loop ---------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        cache = self.deployer.cache
        if cache is not None:
            cache.start()
        try:
            await self._run(stop)
        finally:
            if cache is not None:
                cache.stop()

    async def _run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.start()
                break
            except ProviderError as e:
                log.warning("lease service cannot start yet, retrying in 2s error=%r", str(e))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 2)
        ticker = asyncio.create_task(self._tick_loop(stop))
        # HA: a standby starts withdrawing only when it leads (``lead``)
        withdrawer = asyncio.create_task(self._withdraw_loop(stop)) if self.leading else None
        syncer = asyncio.create_task(self._sync_loop(stop))
        try:
            while not stop.is_set():
                getter = asyncio.ensure_future(self._queue.get())
                stopper = asyncio.ensure_future(stop.wait())
                done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if getter not in done:
                    getter.cancel()
                    break
                kind, lease = getter.result()
                task = asyncio.create_task(self._handle(kind, lease))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            ticker.cancel()
            syncer.cancel()
            if withdrawer is not None:
                await self._finish(withdrawer)  # a withdrawal in flight completes; none starts after stop
            if self._tasks:  # let applies in flight finish (bounded), so nothing is left half-sent
                await asyncio.wait(self._tasks, timeout=30)

    async def _handle(self, kind: str, lease: LeaseId) -> None:
        if not self.leading:  # a standby never acts: the leader picks the stored manifest up
            log.debug("standby: %s left to the leader lease=%s", kind, lease)
            return
        lock = self._locks.setdefault(lease, asyncio.Lock())
        async with self._slots, lock:
            try:
                if kind == "won":
                    await self._won(lease)
                elif kind == "deploy":
                    await self._deploy(lease)
                elif kind == "closed":
                    await self._teardown(lease)
            except Exception:
                self.metrics.reconcile_errors.labels(reason="internal").inc()
                log.exception("lease step failed kind=%s lease=%s", kind, lease)
            finally:
                self._publish()

    async def _won(self, lease: LeaseId) -> None:
        if lease in self.records:
            return
        on_chain = await self.chain.lease(lease)
        height = on_chain.created_height if on_chain else self._current_height()
        self.records[lease] = LeaseRecord(lease, height)
        stored = await asyncio.to_thread(self.deployer.load, lease)  # a manifest may have come first
        if stored is not None:
            rec = self.records[lease]
            self._take_stored(rec, stored)
            rec.state, rec.accepted_at = "deploying", time.monotonic()
            await self._deploy(lease)
        log.info("lease awaiting manifest lease=%s timeout_blocks=%d", lease, self.settings.manifest_timeout_blocks)

    async def _deploy(self, lease: LeaseId) -> None:
        rec = self.records.get(lease)
        if rec is None or rec.group is None or rec.state == "closing":
            return
        delays = (0.5, 1, 2, 5, 10)
        for attempt in range(len(delays) + 1):
            try:
                facts = await asyncio.to_thread(self.deployer.observed_gpus)
                objs = self.deployer.objects(self.ref(lease), rec.group, facts)
                await asyncio.to_thread(self.deployer.apply, objs)
                rec.error = ""
                if rec.state not in ("ready", "degraded"):
                    rec.state = "deploying"
                log.info("lease applied lease=%s objects=%d version=%s", lease, len(objs), rec.version[:12])
                return
            except KubeError as e:
                self.metrics.reconcile_errors.labels(reason="invalid" if e.status in (400, 422) else "kube").inc()
                rec.error = "the provider could not create the workload yet; it retries by itself"
                log.warning("apply failed lease=%s attempt=%d error=%r", lease, attempt + 1, str(e)[:300])
                if e.status in (400, 422) or attempt == len(delays):
                    rec.state = "failed"
                    if e.status in (400, 422):
                        rec.error = f"the cluster refused the workload: {str(e)[-300:]}"
                    return
                await asyncio.sleep(delays[attempt])

    async def _teardown(self, lease: LeaseId) -> None:
        rec = self.records.pop(lease, None)
        if rec is not None:
            rec.state = "closing"
        for delay in (0.5, 1, 2, 5, 10, 30):
            try:
                await asyncio.to_thread(self.deployer.teardown, lease)
                self.metrics.teardowns.inc()
                log.info("lease closed, namespace deleted lease=%s", lease)
                return
            except KubeError as e:
                self.metrics.reconcile_errors.labels(reason="kube").inc()
                log.warning("teardown failed, retrying lease=%s error=%r", lease, str(e)[:300])
                await asyncio.sleep(delay)

    # -- watchdog and monitor ---------------------------------------------------------------------
    def _current_height(self) -> int:
        return self._height() if self._height is not None else 0

    async def _tick_loop(self, stop: asyncio.Event) -> None:
        """A monitor pass every ``tick_seconds``, and soon after the watch cache reports a change."""
        while not stop.is_set():
            waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._changed.wait())}
            _, pending = await asyncio.wait(waiters, timeout=self.settings.tick_seconds, return_when="FIRST_COMPLETED")
            for w in pending:
                w.cancel()
            if stop.is_set():
                return
            self._changed.clear()
            try:
                await self.tick()
            except ProviderError as e:
                log.warning("lease tick failed error=%r", str(e)[:300])
            except Exception:
                log.exception("lease tick failed")

    async def tick(self) -> None:
        height = self._current_height() or (await self.chain.status()).height
        for rec in list(self.records.values()):
            if rec.state == "awaiting_manifest" and height >= rec.won_height + self.settings.manifest_timeout_blocks:
                if self.leading:
                    await self._manifest_timeout(rec)
            elif rec.state in ("deploying", "ready", "degraded", "failed") and rec.group is not None:
                await self.observe(rec)
                policy = self.settings.close_failed_after_seconds
                if policy > 0 and rec.failed_since and time.monotonic() - rec.failed_since >= policy and self.leading:
                    await self._close_failed(rec)
        self._publish()

    # -- high availability ------------------------------------------------------------------------
    async def take_over(self, halt: asyncio.Event) -> bool:
        """This replica leads now (HA). Catch up with the chain and the store, then act: every lease is
        deployed from its stored manifest (idempotent: the apply converges whatever the last leader left
        half done) and stored leases closed meanwhile are torn down. False when halted first. Runs before
        the bid engine starts, so no lease it hands over is dropped."""
        while not self.ready and not halt.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(halt.wait(), 0.5)
        closed: list[LeaseId] = []
        while not halt.is_set():
            try:
                stored = await self.sync()  # still as a standby: follows the chain's active leases too
                closed = []
                for lease_id in set(stored) - set(self.records):
                    on_chain = await self.chain.lease(lease_id)
                    if on_chain is not None and on_chain.state != "active":
                        closed.append(lease_id)
                break
            except ProviderError as e:  # chain or cluster away for a moment: nothing is done until it answers
                log.warning("taking over: cannot read the leases yet, retrying in 2s error=%r", str(e)[:300])
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(halt.wait(), 2)
        if halt.is_set():
            return False
        self.leading = True
        for rec in list(self.records.values()):
            if rec.group is not None:
                self._queue.put_nowait(("deploy", rec.id))
        for lease_id in closed:  # closed while no leader was there to tear it down
            self._queue.put_nowait(("closed", lease_id))
        log.info("leading: converging leases=%d closed=%d", len(self.records), len(closed))
        return True

    async def lead(self, halt: asyncio.Event) -> None:
        """The leader's own loop (HA): withdrawals, until ``halt``; then this replica acts no more."""
        try:
            await self._withdraw_loop(halt)
        finally:
            self.leading = False

    async def _sync_loop(self, stop: asyncio.Event) -> None:
        every = self.settings.sync_seconds
        if every <= 0:
            return
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
            if stop.is_set() or not self.ready:
                continue
            try:
                await self.sync()
            except ProviderError as e:
                log.warning("lease sync failed error=%r", str(e)[:300])
            except Exception:
                log.exception("lease sync failed")

    async def sync(self) -> dict[LeaseId, str]:
        """Bring the records in step with what other replicas did: a manifest stored by another replica is
        taken up (and deployed, when leading); a standby also follows the chain's active leases, since it
        runs no bid engine to tell it of won and closed ones. Returns the stored manifests' versions."""
        if not self.leading:
            active = {lease.id: lease for lease in await self.chain.leases(provider=self.me, state="active")}
            for lease_id, lease in active.items():
                self.records.setdefault(lease_id, LeaseRecord(lease_id, lease.created_height))
            for gone in [r for r in self.records if r not in active]:
                del self.records[gone]
        versions = await asyncio.to_thread(self.deployer.stored_versions)
        for lease_id, version in versions.items():
            rec = self.records.get(lease_id)
            if rec is None or rec.version == version or rec.state == "closing":
                continue
            stored = await asyncio.to_thread(self.deployer.load, lease_id)
            if stored is None:
                continue
            self._take_stored(rec, stored)
            rec.error = ""
            if rec.state in ("awaiting_manifest", "failed"):
                self._set_state(rec, "deploying")
                rec.accepted_at, rec.measured = time.monotonic(), False
            log.info("manifest taken up from the store lease=%s version=%s", lease_id, stored.version[:12])
            if self.leading:
                self._queue.put_nowait(("deploy", lease_id))
        self._publish()
        return versions

    # -- withdrawals ------------------------------------------------------------------------------
    @staticmethod
    async def _finish(task: asyncio.Task[None], timeout: float = 30) -> None:
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(task, timeout)

    async def _withdraw_loop(self, stop: asyncio.Event) -> None:
        period = self.settings.withdrawal_period_seconds
        if period <= 0:
            return
        every = max(0.5, min(30.0, period / 4))
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
            if stop.is_set():
                return
            now = time.monotonic()
            for rec in [r for r in self.records.values() if r.state != "closing" and now - r.withdrawn_at >= period]:
                if stop.is_set():
                    return
                await self.withdraw(rec)

    async def withdraw(self, rec: LeaseRecord) -> None:
        """Move what one lease has earned to our account. A refusal waits a whole period before the next try
        (no fee-burning retry loop); no answer from the chain is retried on the next pass."""
        try:
            coin = await self.chain.withdraw_lease(rec.id)
        except ChainError as e:
            self.metrics.withdrawals.labels(outcome="failed").inc()
            if not e.unreachable:
                rec.withdrawn_at = time.monotonic()
            log.warning("withdrawal failed lease=%s code=%s error=%r", rec.id, e.code, str(e)[:300])
            return
        rec.withdrawn_at = time.monotonic()
        self.metrics.withdrawals.labels(outcome="ok").inc()
        if coin.amount:
            self.metrics.withdrawn.labels(denom=coin.denom[:16]).inc(float(coin.amount.to_decimal()))
        log.info("lease earnings withdrawn lease=%s amount=%s%s", rec.id, coin.amount, coin.denom)

    async def _close_failed(self, rec: LeaseRecord) -> None:
        """The operator's policy: a lease failed for a tenant-side cause (bad image, crash loop, OOM) this
        long is closed on our side. Provider-side causes never get here: they never make a lease failed."""
        causes = ", ".join(sorted({p["reason"] for p in (rec.observed.problems if rec.observed else [])}))
        log.info("closing a lease failed on the tenant's side lease=%s causes=%s", rec.id, causes or "unknown")
        rec.state = "closing"
        try:
            await self.chain.close_bid(rec.id.order, "tenant_workload_failed")
            self.metrics.failed_closes.inc()
        except ChainError as e:
            rec.state = "failed"  # tried again on the next pass
            log.info("close of a failed lease not done lease=%s code=%s", rec.id, e.code)

    async def _manifest_timeout(self, rec: LeaseRecord) -> None:
        log.info("no manifest in time, closing our side lease=%s won_height=%d", rec.id, rec.won_height)
        rec.state = "closing"
        try:
            await self.chain.close_bid(rec.id.order, "manifest_timeout")
            self.metrics.manifest_timeouts.inc()
        except ChainError as e:
            if e.unreachable:
                rec.state = "awaiting_manifest"  # try again next tick
            log.info("close for manifest timeout not done lease=%s code=%s", rec.id, e.code)

    async def observe(self, rec: LeaseRecord) -> LeaseObservation:
        cache = self.deployer.cache
        if cache is not None and cache.synced:  # in memory: no API call, no thread hop
            seen = self.deployer.observe(rec.id, rec.group)
        else:
            seen = await asyncio.to_thread(self.deployer.observe, rec.id, rec.group)
        rec.observed = seen
        expected = {v.name: v.count for v in rec.group.services} if rec.group else {}
        available = all(
            seen.services.get(name) is not None and seen.services[name].available >= count
            for name, count in expected.items()
        )
        some = any(st.available > 0 for st in seen.services.values())
        tenant_problem = any(p["side"] == "tenant" for p in seen.problems)
        if rec.state == "closing":
            return seen
        self._set_state(rec, self._next_state(rec, available, some, tenant_problem))
        return seen

    @staticmethod
    def _set_state(rec: LeaseRecord, state: str) -> None:
        if state == "failed" and rec.state != "failed":
            rec.failed_since = time.monotonic()
        elif state != "failed":
            rec.failed_since = 0.0
        rec.state = state

    def _next_state(self, rec: LeaseRecord, available: bool, some: bool, tenant_problem: bool) -> str:
        expected = bool(rec.group and rec.group.services)
        if available and expected:
            if not rec.measured and rec.accepted_at:
                self.metrics.deploy_seconds.observe(time.monotonic() - rec.accepted_at)
                rec.measured = True
            return "ready"
        if rec.state in ("ready", "degraded"):
            return "degraded"
        if tenant_problem and not some:
            return "failed"
        if rec.state != "failed" or not tenant_problem:
            return "deploying"
        return rec.state

    def _publish(self) -> None:
        for state, n in {**dict.fromkeys(LEASE_STATES, 0), **self.public_status()}.items():
            self.metrics.leases.labels(state=state).set(n)

    # -- manifest intake --------------------------------------------------------------------------
    async def submit_manifest(self, owner: str, dseq: int, body: bytes) -> list[str]:
        try:
            return await self._submit(owner, dseq, body)
        except ManifestRefusedError as e:
            self.metrics.manifests_refused.labels(reason=e.reason).inc()
            log.info("manifest refused owner=%s dseq=%d reason=%s detail=%r", owner, dseq, e.reason, str(e)[:300])
            raise

    async def _submit(self, owner: str, dseq: int, body: bytes) -> list[str]:
        try:
            raw = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise ManifestRefusedError(400, "malformed", "the body is not JSON: send the manifest JSON array") from None
        try:
            manifest = manifest_from_json(raw)
        except ManifestError as e:
            raise ManifestRefusedError(422, "malformed", f"invalid manifest: {e}") from None
        except RecursionError:
            raise ManifestRefusedError(422, "malformed", "invalid manifest: nested too deeply") from None
        try:
            deployment = await self.chain.deployment(owner, dseq)
            leases = await self.chain.leases(provider=self.me, owner=owner, dseq=dseq, state="active")
        except ChainError as e:
            raise ManifestRefusedError(
                503, "unavailable", f"the chain cannot be asked right now ({e.code}); retry"
            ) from None
        if deployment is None:
            raise ManifestRefusedError(404, "no_deployment", f"no deployment {owner}/{dseq} on chain")
        if not leases:
            raise ManifestRefusedError(404, "no_lease", f"deployment {dseq} has no active lease with this provider")
        version = version_of(manifest)
        if version != deployment.version:
            raise ManifestRefusedError(
                422,
                "version",
                f"the manifest's version {version} is not the deployment's version {deployment.version} on chain: "
                "send the manifest of the SDL you deployed, or update the deployment first",
            )
        plans: list[tuple[LeaseId, s.ManifestGroup]] = []
        for lease in leases:
            gseq = lease.id.order.gseq
            if not 1 <= gseq <= len(deployment.groups):
                raise ManifestRefusedError(422, "groups", f"lease group {gseq} is not in the deployment")
            try:
                spec = group_from_json(deployment.groups[gseq - 1])
            except ValueError as e:
                raise ManifestRefusedError(
                    422, "groups", f"the deployment's group {gseq} on chain is unreadable: {e}"
                ) from None
            group = next((g for g in manifest if g.name == spec.name), None)
            if group is None:
                raise ManifestRefusedError(
                    422, "groups", f"the manifest has no group {spec.name!r} (leased group {gseq})"
                )
            problems = check_group(group, spec)
            if problems:
                raise ManifestRefusedError(
                    422, "groups", "the manifest does not match the order: " + "; ".join(problems[:5])
                )
            plans.append((lease.id, group))
        await self._check_hosts(owner, plans)
        for lease_id, group in plans:
            rec = self.records.get(lease_id)
            if rec is not None and rec.group is not None and rec.version != version:
                changed = services_changed(rec.group, group)
                if changed:
                    raise ManifestRefusedError(422, "update", "; ".join(changed))
        accepted = []
        for lease_id, group in plans:
            group_json = group.to_json()
            try:
                await asyncio.to_thread(self.deployer.store, self.ref(lease_id), version, group_json)
            except KubeError as e:
                raise ManifestRefusedError(
                    503, "unavailable", "the provider cannot store the manifest right now; retry"
                ) from e
            rec = self.records.setdefault(lease_id, LeaseRecord(lease_id, self._current_height()))
            rec.version, rec.group, rec.error = version, group, ""
            if rec.state in ("awaiting_manifest", "failed"):  # a new manifest is a new chance
                self._set_state(rec, "deploying")
                rec.accepted_at, rec.measured = time.monotonic(), False
            self._queue.put_nowait(("deploy", lease_id))
            accepted.append(str(lease_id))
            self.metrics.manifests_received.inc()
            log.info("manifest accepted lease=%s version=%s", lease_id, version[:12])
        return accepted

    async def _check_hosts(self, owner: str, plans: list[tuple[LeaseId, s.ManifestGroup]]) -> None:
        settings = self.deployer.settings
        own_domain = settings.ingress_domain.strip(".").lower()
        wanted: list[str] = []
        for _, group in plans:
            for svc in group.services:
                for e in svc.expose:
                    for h in e.hosts or ():
                        host = h.lower()
                        if "*" in host:
                            raise ManifestRefusedError(422, "hostname", f"wildcard hostname {h!r} is not allowed")
                        if own_domain and (host == own_domain or host.endswith("." + own_domain)):
                            raise ManifestRefusedError(
                                422, "hostname", f"hostname {h!r} is in the provider's own domain"
                            )
                        for b in self.settings.blocked_hostnames:
                            if host == b.lower() or (b.startswith(".") and host.endswith(b.lower())):
                                raise ManifestRefusedError(
                                    422, "hostname", f"hostname {h!r} is blocked by this provider"
                                )
                        wanted.append(host)
        if not wanted:
            return
        try:
            owners = await asyncio.to_thread(self.deployer.host_owners)
        except KubeError:
            raise ManifestRefusedError(
                503, "unavailable", "the provider cannot check hostnames right now; retry"
            ) from None
        for host in wanted:
            taken_by = owners.get(host)
            if taken_by is not None and taken_by != owner:
                raise ManifestRefusedError(409, "hostname", f"hostname {host!r} is in use by another deployment")

    # -- what the API shows -------------------------------------------------------------------------
    def lease_for(self, owner: str, dseq: int, gseq: int, oseq: int) -> LeaseRecord | None:
        return self.records.get(LeaseId(OrderId(owner, dseq, gseq, oseq), self.me))

    async def lease_status(self, rec: LeaseRecord) -> dict[str, Any]:
        seen = await self.observe(rec) if rec.group is not None else None
        services: dict[str, Any] = {}
        forwarded: dict[str, Any] = {}
        if rec.group is not None:
            for svc in rec.group.services:
                st = seen.services.get(svc.name) if seen else None
                uris = sorted(
                    {
                        h
                        for e in svc.expose
                        if e.is_ingress
                        for h in hosts_of(self.ref(rec.id), svc, e, self.deployer.settings)
                    }
                )
                services[svc.name] = {
                    "name": svc.name,
                    "available": st.available if st else 0,
                    "total": svc.count,
                    "uris": uris,
                    "observed_generation": st.observed_generation if st else 0,
                    "replicas": st.replicas if st else 0,
                    "updated_replicas": st.updated if st else 0,
                    "ready_replicas": st.ready if st else 0,
                    "available_replicas": st.available if st else 0,
                }
                if st and st.ports:
                    forwarded[svc.name] = st.ports
        errors = [
            {"service": p["service"], "reason": p["reason"], "message": p["message"]}
            for p in (seen.problems if seen else [])
        ]
        if rec.error:
            errors.append({"service": "", "reason": "provider", "message": rec.error})
        return {
            "state": rec.state,
            "version": rec.version,
            "services": services,
            "forwarded_ports": forwarded,
            "ips": {},
            "errors": errors,
        }

    def public_status(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for rec in self.records.values():
            counts[rec.state] = counts.get(rec.state, 0) + 1
        return counts
