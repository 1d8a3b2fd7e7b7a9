"""Maintenance mode against the real mock chain: no new bids while it is on (flag file or config), and
orders that opened meanwhile get their bid once it is off, without a restart."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from provider.bidding.engine import MAINTENANCE_FILE
from tests.market.conftest import REPO, ChainProcess, make_engine, parties, run, running, wait_until
from tests.market.test_engine_hardening import counter
from tests.market.test_flow import deployment_msg


def skipped_for_maintenance(engine: object) -> object:
    async def check() -> bool:
        return counter(engine.metrics.orders_skipped, reason="maintenance") >= 1  # type: ignore[attr-defined]

    return check


def test_maintenance_stops_new_bids_and_resumes_without_a_restart(chain_proc: ChainProcess, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / MAINTENANCE_FILE).write_text("since now: driver upgrade\n")

    async def go() -> None:
        async with parties(chain_proc.url) as (tenant, prov):
            engine = make_engine(prov, state)
            async with running(engine):
                await tenant.submit("deployment.create", deployment_msg(1, 5_000_000))
                await wait_until(skipped_for_maintenance(engine))
                assert await tenant.bids(owner=tenant.address, dseq=1) == []
                assert counter(engine.metrics.maintenance) == 1
                (state / MAINTENANCE_FILE).unlink()
                # the order that opened during maintenance gets its bid now
                await wait_until(lambda: tenant.bids(owner=tenant.address, dseq=1), timeout=30)
                assert counter(engine.metrics.maintenance) == 0
                await tenant.submit("deployment.create", deployment_msg(2, 5_000_000))
                await wait_until(lambda: tenant.bids(owner=tenant.address, dseq=2), timeout=30)

    run(go())


def test_maintenance_from_the_config_also_holds_bids(chain_proc: ChainProcess, tmp_path: Path) -> None:
    async def go() -> None:
        async with parties(chain_proc.url) as (tenant, prov):
            engine = make_engine(prov, tmp_path / "state", maintenance=True)
            async with running(engine):
                await tenant.submit("deployment.create", deployment_msg(1, 5_000_000))
                await wait_until(skipped_for_maintenance(engine))
                assert await tenant.bids(owner=tenant.address, dseq=1) == []

    run(go())


def test_the_maintenance_command_sets_shows_and_clears_the_flag(tmp_path: Path) -> None:
    config = tmp_path / "provider.yaml"
    config.write_text(yaml.safe_dump({"provider": {"state_dir": str(tmp_path / "state")}}))

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "provider.cli", "maintenance", *args, "--config", str(config)],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout

    assert cli("status").startswith("maintenance off")
    assert "no new bids" in cli("on", "--reason", "driver upgrade")
    assert (tmp_path / "state" / MAINTENANCE_FILE).exists()
    shown = cli("status")
    assert shown.startswith("maintenance on") and "driver upgrade" in shown
    cli("off")
    assert not (tmp_path / "state" / MAINTENANCE_FILE).exists()
    assert cli("status").startswith("maintenance off")
