"""A real provider daemon (`gpu-provider run` as a process) against the dev cluster and a mock chain, and
the tenant's side of the flow, for the lease lifecycle tests."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from provider import tenant as tenant_ops
from provider.chain.client import ChainClient
from provider.chain.keys import Key, Keyring
from provider.money import Dec
from tests.market.conftest import REPO, ChainProcess, free_port, funded


def gpu_sdl(image: str, model: str = "h200", command: str = "echo hello-from-lease; sleep 3600", count: int = 1) -> str:
    return f"""
version: "2.0"
services:
  app:
    image: {image}
    command: ["sh", "-c"]
    args: [{json.dumps(command)}]
    env:
      - GREETING=hello
      - API_TOKEN=s3cr3t-env-value
    expose:
      - port: 8080
        as: 8080
        to:
          - global: true
profiles:
  compute:
    app:
      resources:
        cpu: {{units: 0.1}}
        memory: {{size: 64Mi}}
        storage: {{size: 64Mi}}
        gpu:
          units: 1
          attributes:
            vendor:
              nvidia:
                - model: {model}
  placement:
    dc:
      pricing:
        app: {{denom: uact, amount: 1000000}}
deployment:
  app:
    dc: {{profile: app, count: {count}}}
"""


@dataclass
class Daemon:
    """`gpu-provider run` with a config written for this test; logs in ``log``."""

    dir: Path
    kubeconfig: Path
    chain: ChainProcess | None  # the mock chain; None with chain_section (another chain)
    dns_ip: str
    manifest_timeout_blocks: int = 400
    api_extra: dict[str, Any] = field(default_factory=dict)
    deploy_extra: dict[str, Any] = field(default_factory=dict)
    inventory_extra: dict[str, Any] = field(default_factory=dict)
    log_level: str = "info"
    api_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    ha: dict[str, Any] | None = None  # the config's ha section (HA replicas)
    key: Key | None = None  # another replica's key (HA replicas share one provider account)
    chain_section: dict[str, Any] | None = None  # the config's chain section, instead of the mock chain's
    extra: dict[str, Any] = field(default_factory=dict)  # more top-level config sections (pricing, bidding)
    tls: tuple[Path, Path, Path] | None = None  # (cert, key, CA) to serve the API over HTTPS
    source: Path = REPO  # the source tree it runs from (another release's, for upgrade tests)
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.keyring = self.dir / "keyring.json"
        self.key = Keyring(self.keyring).add("provider", self.key)
        self.namespace = f"gp-{self.key.address[-8:]}"
        self.config = self.dir / "provider.yaml"
        self.log = self.dir / "daemon.log"
        if self.chain_section is None:
            assert self.chain is not None
        cfg = {
            "chain": self.chain_section
            or {"url": self.chain.url if self.chain else "", "key": "provider", "keyring": str(self.keyring)},
            "provider": {
                "host_uri": self.url,
                "state_dir": str(self.dir / "state"),
                "metrics_address": f"127.0.0.1:{self.metrics_port}",
            },
            "inventory": {"kubeconfig": str(self.kubeconfig), **self.inventory_extra},
            "api": {"address": f"127.0.0.1:{self.api_port}", **self._api_tls(), **self.api_extra},
            "deploy": {
                "namespace": self.namespace,
                "manifest_timeout_blocks": self.manifest_timeout_blocks,
                "dns_cidrs": [f"{self.dns_ip}/32"],
                **self.deploy_extra,
            },
            **({"ha": self.ha} if self.ha is not None else {}),
            **self.extra,
        }
        self.config.write_text(yaml.safe_dump(cfg))

    def _api_tls(self) -> dict[str, Any]:
        if self.tls is None:
            return {"insecure_http": True}
        return {"tls_cert": str(self.tls[0]), "tls_key": str(self.tls[1])}

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.api_port}"

    def setup(self) -> None:
        subprocess.run(
            [sys.executable, "-m", "provider.cli", "setup", "--config", str(self.config)],
            cwd=self.source,
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "provider.cli",
                    "run",
                    "--config",
                    str(self.config),
                    "--log-level",
                    self.log_level,
                ],
                cwd=self.source,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "KUBECONFIG": str(self.kubeconfig), "PYTHONPATH": str(self.source)},
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the daemon exited: {self.log.read_text()[-3000:]}"
            try:
                verify = ssl.create_default_context(cafile=str(self.tls[2])) if self.tls else True
                if httpx.get(self.url + "/readyz", timeout=1, verify=verify).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"the daemon never became ready: {self.log.read_text()[-3000:]}")

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def metric(self, name: str) -> float:
        """One unlabelled sample from the daemon's /metrics (0 when absent)."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).text
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return 0.0


@contextmanager
def daemon_running(
    kubeconfig: Path, chain: ChainProcess | None, real_node: dict[str, Any], tmp: Path, **settings: Any
) -> Iterator[Daemon]:
    """A set-up, started daemon (``settings`` are Daemon fields), funded on the mock chain when one is
    given (another chain comes with ``chain_section``), stopped afterwards."""
    d = Daemon(tmp, kubeconfig, chain, dns_ip=str(real_node["ip"]), **settings)
    if chain is not None:
        asyncio.run(funded(chain.url, d.key))
    d.setup()
    d.start()
    try:
        yield d
    finally:
        d.stop()


def lease_ready(daemon: Daemon, token: str, dseq: int) -> Callable[[], Awaitable[Any]]:
    """A check for ``poll``: the lease's status once its state is ready (None before, or while the
    daemon does not answer)."""

    async def check() -> Any:
        try:
            body = get(f"{daemon.url}/lease/{dseq}/1/1/status", token).json()
        except httpx.HTTPError:
            return None
        return body if body.get("state") == "ready" else None

    return check


async def tenant_client(chain: ChainProcess, key: Key) -> ChainClient:
    client: ChainClient = await funded(chain.url, key)
    return client


async def lease_on(tenant: ChainClient, text: str, dseq: int, provider: str, deposit: int = 50_000_000) -> str:
    """Deploy ``text`` as the tenant and accept ``provider``'s bid; the lease id."""
    await tenant_ops.deploy(tenant, text.encode(), "test.yaml", Dec.parse(deposit), dseq, wait=0)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        bids = await tenant.bids(owner=tenant.address, dseq=dseq, state="open")
        mine = [b for b in bids if b.id.provider == provider]
        if mine:
            await tenant_ops.accept(tenant, str(mine[0].id))
            return str(mine[0].id)
        await asyncio.sleep(0.3)
    raise AssertionError(f"no bid from {provider} on {dseq}")


async def poll(check: Any, timeout: float = 180, every: float = 1.0) -> Any:
    """Await ``check()`` until it returns something truthy; fail with its last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"condition not met in {timeout}s; last value {last!r}")


def get(url: str, token: str) -> httpx.Response:
    return httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
