"""`gpu-provider run` with `chain.kind: akash` against Akash's own node: the daemon registers, follows
the chain and bids with real transactions on orders the tenant makes with the real `akash` CLI.

One daemon process (static inventory: this proof is about the chain; the dev-cluster lifecycle is
another) through a SIGKILL mid-flow and a restart of the node itself; every MsgCreateBid it ever sent
is counted from the chain's own transaction index, so "exactly one bid per order" is the chain's word."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from provider.devcluster import procs
from provider.devcluster.akash import AkashDevnet, DevnetState
from tests.conftest import REPO

pytestmark = pytest.mark.akash

GPU_SDL = REPO / "sdl" / "examples" / "llm-inference.yaml"
WAIT = 90.0  # generous: a bid takes a block or two


class Daemon:
    def __init__(self, config: Path, log: Path, metrics_port: int) -> None:
        self.config, self.log, self.metrics_port = config, log, metrics_port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "provider.cli", "run", "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                start_new_session=True,
            )

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)  # a crash: no clean shutdown, no cursor flush
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            procs.stop([self.proc.pid])

    def metric(self, name: str, **labels: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + ("{" if labels else " ")) and (not labels or "{" + want + "}" in line):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])


def until(check: Any, what: str, daemon: Daemon, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = check()
        except OSError:
            found = None
        if found:
            return found
        if daemon.proc is not None and daemon.proc.poll() is not None:
            pytest.fail(f"the daemon exited ({daemon.proc.returncode}) waiting for {what}:\n{daemon.tail()}")
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}:\n{daemon.tail()}")


def deploy_at(devnet: AkashDevnet, chain: DevnetState, sdl_path: Path = GPU_SDL) -> tuple[int, int]:
    """A deployment made by the tenant with the real CLI: its dseq and the height of the block it is in."""
    result = devnet.tx(chain, "tenant", "deployment", "create", str(sdl_path), "--deposit", "5000000uact")
    created = next(e for e in result["events"] if e["type"] == "akash.deployment.v1.EventDeploymentCreated")
    return int(json.loads({a["key"]: a["value"] for a in created["attributes"]}["id"])["dseq"]), int(result["height"])


def deploy(devnet: AkashDevnet, chain: DevnetState, sdl_path: Path = GPU_SDL) -> int:
    return deploy_at(devnet, chain, sdl_path)[0]


def our_bid(devnet: AkashDevnet, chain: DevnetState, dseq: int) -> dict[str, Any] | None:
    found = devnet._get(
        f"{chain.rest}/akash/market/v1beta5/bids/list?filters.provider={chain.keys['provider']}"
        f"&filters.owner={chain.keys['tenant']}&filters.dseq={dseq}"
    )
    bids = (found or {}).get("bids") or []
    return bids[0]["bid"] if bids else None


def bid_transactions(devnet: AkashDevnet, chain: DevnetState) -> Counter[tuple[str, int]]:
    """Every successful MsgCreateBid the provider's account ever sent, by (owner, dseq), from the
    chain's transaction index."""
    counts: Counter[tuple[str, int]] = Counter()
    for response in devnet.txs(chain, f"message.sender='{chain.keys['provider']}'"):
        if int(response.get("code", 0)):
            continue
        for msg in response["tx"]["body"]["messages"]:
            if msg["@type"] == "/akash.market.v1beta5.MsgCreateBid":
                counts[(msg["id"]["owner"], int(msg["id"]["dseq"]))] += 1
    return counts


def akash_daemon(chain: DevnetState, home: Path, **sections: dict[str, Any]) -> Daemon:
    """`gpu-provider run` on the devnet with the provider key, a static H100 inventory and uact deposits
    (``sections`` are merged into the config); started."""
    home.mkdir(parents=True, exist_ok=True)
    key_file = home / "provider.key"
    key_file.write_text(chain.mnemonics["provider"] + "\n")
    key_file.chmod(0o600)
    metrics_port = procs.free_port()
    config: dict[str, Any] = {
        "chain": {
            "kind": "akash",
            "akash": {"rpc": chain.rpc, "rest": chain.rest, "chain_id": chain.chain_id, "key_file": str(key_file)},
        },
        "provider": {
            "host_uri": "https://provider.devnet.example:8443",
            "attributes": {"region": "devnet"},
            "state_dir": str(home / "state"),
            "metrics_address": f"127.0.0.1:{metrics_port}",
        },
        "bidding": {"deposit": {"denom": "uact", "amount": 500000}},
        "inventory": {
            "storage_capacity": {"beta3": "100Ti"},
            "static": [{"name": "h100", "model": "h100", "ram": "80Gi", "interface": "sxm", "gpus": 8, "count": 8}],
        },
    }
    for name, section in sections.items():
        config[name] = {**config.get(name, {}), **section}
    (home / "provider.yaml").write_text(yaml.safe_dump(config))
    d = Daemon(home / "provider.yaml", home / "daemon.log", metrics_port)
    d.start()
    return d


@pytest.fixture(scope="module")
def daemon(chain: DevnetState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = akash_daemon(chain, tmp_path_factory.mktemp("akash-daemon"))
    try:
        yield d
    finally:
        d.stop()


def test_the_daemon_bids_once_per_order_through_a_crash_and_a_node_restart(
    devnet: AkashDevnet, chain: DevnetState, daemon: Daemon
) -> None:
    first = deploy(devnet, chain)
    bid = until(lambda: our_bid(devnet, chain, first), f"our bid on dseq {first}", daemon)
    assert bid["state"] == "open" and bid["price"]["denom"] == "uact"
    assert 0 < float(bid["price"]["amount"]) <= 10000  # under the order's maximum, in its denom
    provider = devnet._get(f"{chain.rest}/akash/provider/v1beta4/providers/{chain.keys['provider']}")
    attrs = {a["key"]: a["value"] for a in provider["provider"]["attributes"]}
    assert attrs["capabilities/gpu/vendor/nvidia/model/h100/ram/80Gi/interface/sxm"] == "true"
    assert attrs["region"] == "devnet" and "capabilities/storage/1/class" in attrs

    # killed with -9 the moment an order is in a block (its bid may be on the way): on restart it
    # resumes from its cursor, sees its own bid if it went out, and bids if it did not
    second = deploy(devnet, chain)
    daemon.kill()
    daemon.start()
    until(lambda: our_bid(devnet, chain, second), f"our bid on dseq {second} after the crash", daemon)
    # killed, and an order made while it is down: found from the cursor on restart
    daemon.kill()
    while_down = deploy(devnet, chain)
    daemon.start()
    until(lambda: our_bid(devnet, chain, while_down), f"our bid on dseq {while_down} made while down", daemon)

    # the node itself restarts (SIGTERM, 3 s down): the daemon waits for it and goes on
    devnet.restart(down_for=3)
    third = deploy(devnet, chain)
    until(lambda: our_bid(devnet, chain, third), f"our bid on dseq {third} after the node restart", daemon)

    time.sleep(3)  # a duplicate would have been sent by now
    counts = bid_transactions(devnet, chain)
    for dseq in (first, second, while_down, third):
        assert counts[(chain.keys["tenant"], dseq)] == 1, f"dseq {dseq}: {counts[(chain.keys['tenant'], dseq)]} bids"
    assert all(n == 1 for n in counts.values()), counts


def skipped_with_reason(devnet: AkashDevnet, chain: DevnetState, daemon: Daemon, sdl: Path, reason: str) -> int:
    """Deploy ``sdl`` as the tenant once the daemon follows the chain; assert it is skipped with ``reason``
    (the metric moves) and never bid on (the chain's own index). Its dseq."""
    until(lambda: daemon.metric("gpu_provider_chain_feed_last_poll_timestamp_seconds"), "the feed to run", daemon)
    before = daemon.metric("gpu_provider_orders_skipped_total", reason=reason)
    dseq = deploy(devnet, chain, sdl)
    until(
        lambda: daemon.metric("gpu_provider_orders_skipped_total", reason=reason) > before,
        f"the order to be skipped ({reason})",
        daemon,
    )
    assert our_bid(devnet, chain, dseq) is None
    assert bid_transactions(devnet, chain)[(chain.keys["tenant"], dseq)] == 0
    return dseq


def test_an_order_the_policy_rejects_is_skipped_with_its_reason(
    devnet: AkashDevnet, chain: DevnetState, daemon: Daemon, tmp_path: Path
) -> None:
    a100 = tmp_path / "a100.yaml"
    a100.write_text(GPU_SDL.read_text().replace("model: h100", "model: a100"))
    skipped_with_reason(devnet, chain, daemon, a100, "gpu_model_not_offered")
