"""A local Akash devnet: Akash's own node (v2.0.1, built by hack/akash-devnet/build.sh from the vendored
sources), one validator on loopback with 1 s blocks, for testing against the real chain.

``up`` initialises a fresh chain and starts it:

- a test keyring with three keys: validator, provider and tenant;
- the validator is the oracle's one price source, with staleness and TWAP windows wide enough that the
  price never drops out;
- the BME module account is funded, so AKT can be minted into ACT;
- every listener is on 127.0.0.1 (free ports), REST and gRPC are on, and pprof is off;
- once blocks are made, it feeds an AKT price and mints ACT for the tenant and the provider, so SDL
  prices in ``uact`` can be paid, and publishes the tenant's client certificate (Akash's CLI needs it to
  create a deployment).

``down`` stops the node and removes the state directory; ``status`` reports it. The facts it rests on
are in ../shared/vendor/akash/README.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from provider.chain.akash.keys import bech32_address
from provider.devcluster import procs
from provider.devcluster.build import REPO
from provider.devcluster.errors import DevClusterError
from provider.files import write_private

BUILD_SCRIPT = REPO / "hack" / "akash-devnet" / "build.sh"
DEFAULT_STATE = Path.home() / ".cache" / "gpu-provider" / "akash-devnet" / "state"
CHAIN_ID = "gpu-provider-devnet"
KEYS = ("validator", "provider", "tenant")
DENOM = "uakt"
ACCOUNT_UAKT = 10_000_000_000_000  # 10M AKT per key
BME_UAKT = 300_000_000_000  # 300k AKT in the BME vault, as the mainnet upgrade funds it
STAKE_UAKT = 1_000_000_000_000
MINT_UAKT = 2_000_000_000  # AKT turned into ACT for the tenant and the provider at start
AKT_USD = "0.5"


@dataclass
class DevnetState:
    pid: int = 0
    bin_dir: str = ""
    ports: dict[str, int] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)  # name -> akash1... address
    mnemonics: dict[str, str] = field(default_factory=dict)  # name -> BIP-39 words (test keys; file is 0600)
    chain_id: str = CHAIN_ID

    @property
    def rpc(self) -> str:
        return f"http://127.0.0.1:{self.ports['rpc']}"

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.ports['rest']}"


def build_node(progress: bool = False) -> Path:
    """Build Akash's node once per input hash; returns its bin directory."""
    if not BUILD_SCRIPT.is_file():
        raise DevClusterError(f"{BUILD_SCRIPT} not found: the devnet builds Akash's node from a checkout")
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        stdout=subprocess.PIPE,
        stderr=None if progress else subprocess.PIPE,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        detail = "" if progress else f":\n{(proc.stderr or '')[-4000:]}"
        raise DevClusterError(f"building Akash's node failed (exit {proc.returncode}){detail}")
    return Path(proc.stdout.strip().splitlines()[-1])


def module_address(name: str) -> str:
    """A Cosmos module account's address: the first 20 bytes of sha256(name), bech32 with prefix akash."""
    address: str = bech32_address(hashlib.sha256(name.encode()).digest()[:20])
    return address


@dataclass(frozen=True)
class NodeShape:
    """How the devnet's node keeps history, to look like a mainnet node rather than a fresh chain:
    ``initial_height`` > 1 (a chain started after an export, as Akash's mainnet is); ``retain_blocks`` > 0
    prunes blocks and their results older than that many (``min-retain-blocks`` with the evidence window
    cut to match); ``discard_results`` keeps no block results at all (``discard_abci_responses``), only
    the transaction index."""

    initial_height: int = 1
    retain_blocks: int = 0
    discard_results: bool = False


class AkashDevnet:
    def __init__(self, state_dir: Path = DEFAULT_STATE, shape: NodeShape | None = None) -> None:
        self.shape = shape or NodeShape()
        self.dir = state_dir
        self.home = state_dir / "home"
        self.log = state_dir / "akash.log"
        self.state_file = state_dir / "state.json"

    # state ----------------------------------------------------------------------------------------------
    def load(self) -> DevnetState | None:
        try:
            return DevnetState(**json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def _save(self, state: DevnetState) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_private(self.state_file, json.dumps(asdict(state), indent=2).encode())

    def running(self, state: DevnetState | None = None) -> bool:
        state = state or self.load()
        return bool(state and state.pid and procs.alive(state.pid) and procs.command_of(state.pid).endswith("akash"))

    # the node's CLI -------------------------------------------------------------------------------------
    def akash(self, state: DevnetState, *args: str, timeout: float = 60) -> str:
        bin_dir = Path(state.bin_dir)
        env = {**os.environ, "LD_LIBRARY_PATH": str(bin_dir.parent / "lib")}
        proc = subprocess.run(
            [str(bin_dir / "akash"), *args, "--home", str(self.home)],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            env=env,
        )
        if proc.returncode != 0:
            raise DevClusterError(f"akash {' '.join(args[:3])} failed: {(proc.stderr or proc.stdout)[-2000:]}")
        return proc.stdout

    def tx(self, state: DevnetState, sender: str, *args: str) -> dict[str, Any]:
        """One transaction from a key of the test keyring, waited for until it is in a block."""
        out = self.akash(
            state,
            "tx",
            *args,
            "--from",
            sender,
            "--keyring-backend",
            "test",
            "--chain-id",
            state.chain_id,
            "--node",
            f"tcp://127.0.0.1:{state.ports['rpc']}",
            "--gas",
            "auto",
            "--gas-adjustment",
            "1.5",
            "--gas-prices",
            f"0.025{DENOM}",
            "--yes",
            "--broadcast-mode",
            "sync",
            "--output",
            "json",
        )
        sent: dict[str, Any] = json.loads(out)
        if sent.get("code"):
            raise DevClusterError(f"tx {' '.join(args[:2])} refused: {sent.get('raw_log')}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = self._get(f"{state.rest}/cosmos/tx/v1beta1/txs/{sent['txhash']}")
            if found is not None:
                result: dict[str, Any] = found["tx_response"]
                if result.get("code"):
                    raise DevClusterError(f"tx {' '.join(args[:2])} failed: {result.get('raw_log')}")
                return result
            time.sleep(0.5)
        raise DevClusterError(f"tx {' '.join(args[:2])} ({sent['txhash']}) was not included in 30 s")

    @staticmethod
    def _get(url: str) -> Any:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return json.loads(resp.read())
        except (OSError, urllib.error.URLError, ValueError):
            return None

    def height(self, state: DevnetState) -> int:
        status = self._get(f"{state.rpc}/status")
        if not status:
            return 0
        return int(status["result"]["sync_info"]["latest_block_height"])

    def balance(self, state: DevnetState, address: str, denom: str) -> int:
        found = self._get(f"{state.rest}/cosmos/bank/v1beta1/balances/{address}/by_denom?denom={denom}")
        return int(found["balance"]["amount"]) if found else 0

    def txs(self, state: DevnetState, query: str) -> list[dict[str, Any]]:
        """Every transaction the chain's index finds for a CometBFT ``query`` (all pages), as tx
        responses: the tx itself (decoded by the node), its height, result code and events. Read from the
        RPC's tx index, which outlives pruned blocks (the REST search needs each tx's block)."""
        found_all: list[dict[str, Any]] = []
        page = 1
        while True:
            params = urllib.parse.urlencode({"query": f'"{query}"', "page": page, "per_page": 100})
            found = self._get(f"{state.rpc}/tx_search?{params}")
            if found is None or "result" not in found:
                raise DevClusterError(f"the chain's tx search did not answer for {query!r}: {found!r:.300}")
            for t in found["result"].get("txs") or []:
                decoded = self._post(f"{state.rest}/cosmos/tx/v1beta1/decode", {"tx_bytes": t["tx"]})
                if decoded is None:
                    raise DevClusterError(f"the node could not decode tx {t['hash']}")
                result = t.get("tx_result") or {}
                found_all.append(
                    {
                        "txhash": t["hash"],
                        "height": t["height"],
                        "code": int(result.get("code") or 0),
                        "raw_log": result.get("log", ""),
                        "events": result.get("events") or [],
                        "tx": decoded["tx"],
                    }
                )
            if page * 100 >= int(found["result"].get("total_count") or 0):
                return found_all
            page += 1

    @staticmethod
    def _post(url: str, body: Any) -> Any:
        request = urllib.request.Request(
            url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                return json.loads(resp.read())
        except (OSError, urllib.error.URLError, ValueError):
            return None

    # up / down ------------------------------------------------------------------------------------------
    def up(self, timeout: float = 180, progress: bool = False, fund: bool = True) -> DevnetState:
        """A running devnet (this one if it runs). ``fund=False`` skips the oracle price, the ACT mints and
        the tenant's certificate (the keys still hold AKT): enough for a chain that is only followed."""
        state = self.load()
        if state is not None and self.running(state) and self.height(state) > self.shape.initial_height:
            return state
        if state is not None:
            self.down()
        bin_dir = build_node(progress)
        state = DevnetState(
            bin_dir=str(bin_dir), ports={k: procs.free_port() for k in ("rpc", "p2p", "rest", "grpc", "abci")}
        )
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._save(state)
        try:
            self._init(state)
            self._start(state, timeout, first_height=self.shape.initial_height + 1)
            if fund:
                self._fund_act(state, timeout)
        except BaseException:
            self.down()
            raise
        return state

    def _start(self, state: DevnetState, timeout: float, first_height: int) -> None:
        bin_dir = Path(state.bin_dir)
        with open(self.log, "ab") as log:
            proc = subprocess.Popen(
                [str(bin_dir / "akash"), "start", "--home", str(self.home)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "LD_LIBRARY_PATH": str(bin_dir.parent / "lib")},
                start_new_session=True,
            )
        state.pid = proc.pid
        self._save(state)
        self._wait(lambda: self.height(state) >= first_height, timeout, "the devnet to make blocks")
        self._wait(lambda: self._get(f"{state.rest}/cosmos/base/tendermint/v1beta1/node_info") is not None,
                   timeout, "the REST API to answer")  # fmt: skip

    def restart(self, timeout: float = 120, down_for: float = 0.0) -> DevnetState:
        """Stop the node (SIGTERM, as an operator's restart does) and start it again on the same chain,
        after ``down_for`` seconds; returns once it makes blocks past where it stopped."""
        state = self.load()
        if state is None or not self.running(state):
            raise DevClusterError("the devnet is not running: nothing to restart")
        stopped_at = self.height(state)
        procs.stop([state.pid])
        time.sleep(down_for)
        self._start(state, timeout, first_height=stopped_at + 1)
        return state

    def _wait(self, check: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.load()
            if state is not None and state.pid and not procs.alive(state.pid):
                raise DevClusterError(f"the akash node exited while waiting for {what}:\n{self._tail()}")
            if check():
                return
            time.sleep(0.5)
        raise DevClusterError(f"timed out after {timeout:.0f}s waiting for {what}:\n{self._tail()}")

    def _tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _init(self, state: DevnetState) -> None:
        self.akash(
            state, "genesis", "init", "gpu-provider-devnet", "--chain-id", state.chain_id, "--default-denom", DENOM
        )
        for name in KEYS:
            out = self.akash(state, "keys", "add", name, "--keyring-backend", "test", "--output", "json")
            created = json.loads(out)
            state.keys[name] = created["address"]
            state.mnemonics[name] = created["mnemonic"]
            self.akash(state, "genesis", "add-account", state.keys[name], f"{ACCOUNT_UAKT}{DENOM}")
        self._save(state)
        self._edit_genesis(state)
        self.akash(
            state,
            "genesis",
            "gentx",
            "validator",
            f"{STAKE_UAKT}{DENOM}",
            "--chain-id",
            state.chain_id,
            "--keyring-backend",
            "test",
            "--min-self-delegation",
            "1",
            "--commission-rate",
            "0.1",
            "--commission-max-rate",
            "0.2",
            "--commission-max-change-rate",
            "0.01",
            "--ip",
            "127.0.0.1",
        )
        self.akash(state, "genesis", "collect")
        self.akash(state, "genesis", "validate")
        self._edit_config(state)

    def _edit_genesis(self, state: DevnetState) -> None:
        path = self.home / "config" / "genesis.json"
        genesis = json.loads(path.read_text())
        genesis["initial_height"] = self.shape.initial_height
        if self.shape.retain_blocks:  # the evidence window bounds what min-retain-blocks may prune
            genesis["consensus"]["params"]["evidence"]["max_age_num_blocks"] = str(self.shape.retain_blocks)
        app = genesis["app_state"]
        oracle = app["oracle"]["params"]
        oracle.update(
            {
                "sources": [state.keys["validator"]],
                "min_price_sources": 1,
                "max_price_staleness_blocks": "1000000",
                "twap_window": "1000000",
            }
        )
        bme = module_address("bme")
        app["auth"]["accounts"].append(
            {
                "@type": "/cosmos.auth.v1beta1.ModuleAccount",
                "base_account": {"address": bme, "pub_key": None, "account_number": "0", "sequence": "0"},
                "name": "bme",
                "permissions": ["burner", "minter"],
            }
        )
        app["bank"]["balances"].append({"address": bme, "coins": [{"denom": DENOM, "amount": str(BME_UAKT)}]})
        if app["bank"].get("supply"):
            for coin in app["bank"]["supply"]:
                if coin["denom"] == DENOM:
                    coin["amount"] = str(int(coin["amount"]) + BME_UAKT)
        path.write_text(json.dumps(genesis, indent=1))

    def _edit_config(self, state: DevnetState) -> None:
        p = state.ports
        config = self.home / "config" / "config.toml"
        text = config.read_text()
        for key, value in (
            ("timeout_commit", '"1s"'),
            ("pprof_laddr", '""'),
            ("addr_book_strict", "false"),
            ("allow_duplicate_ip", "true"),
            ("discard_abci_responses", "true" if self.shape.discard_results else "false"),
        ):
            text = re.sub(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
        text = _in_section(text, "rpc", "laddr", f'"tcp://127.0.0.1:{p["rpc"]}"')
        text = _in_section(text, "p2p", "laddr", f'"tcp://127.0.0.1:{p["p2p"]}"')
        text = re.sub(r"(?m)^proxy_app = .*$", f'proxy_app = "tcp://127.0.0.1:{p["abci"]}"', text)
        config.write_text(text)
        app = self.home / "config" / "app.toml"
        text = app.read_text()
        text = re.sub(r"(?m)^minimum-gas-prices = .*$", f'minimum-gas-prices = "0.025{DENOM}"', text)
        text = re.sub(r"(?m)^min-retain-blocks = .*$", f"min-retain-blocks = {self.shape.retain_blocks}", text)
        text = _in_section(text, "api", "enable", "true")
        text = _in_section(text, "api", "address", f'"tcp://127.0.0.1:{p["rest"]}"')
        text = _in_section(text, "grpc", "address", f'"127.0.0.1:{p["grpc"]}"')
        text = _in_section(text, "grpc-web", "enable", "false")
        app.write_text(text)

    def _fund_act(self, state: DevnetState, timeout: float) -> None:
        """Give the oracle a price and mint ACT from AKT for the tenant and the provider (v2 prices in uact)."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.tx(state, "validator", "oracle", "feed", "akt", "usd", AKT_USD, now)

        def mints_allowed() -> bool:  # two blocks after the first price
            found = self._get(f"{state.rest}/akash/bme/v1/status")
            return bool(found and found.get("mints_allowed"))

        self._wait(mints_allowed, timeout, "BME to allow minting ACT")
        for name in ("tenant", "provider"):
            self.tx(state, name, "bme", "mint-act", f"{MINT_UAKT}{DENOM}")
        # the tenant's client certificate: Akash's CLI will not create a deployment without one
        self.akash(state, "tx", "cert", "generate", "client", "--from", "tenant", "--keyring-backend", "test")
        self.tx(state, "tenant", "cert", "publish", "client")
        for name in ("tenant", "provider"):
            address = state.keys[name]
            self._wait(lambda a=address: self.balance(state, a, "uact") > 0, timeout, f"ACT for the {name}")

    def down(self) -> None:
        state = self.load()
        if state is not None and state.pid and self.running(state):
            procs.stop([state.pid])
        if self.dir.exists():
            shutil.rmtree(self.dir)

    def status(self) -> dict[str, Any]:
        state = self.load()
        if state is None:
            return {"running": False}
        return {
            "running": self.running(state),
            "height": self.height(state),
            "chain_id": state.chain_id,
            "rpc": state.rpc,
            "rest": state.rest,
            "grpc": f"127.0.0.1:{state.ports.get('grpc')}",
            "keys": state.keys,
            "home": str(self.home),
        }


def _in_section(text: str, section: str, key: str, value: str) -> str:
    """Set ``key = value`` inside ``[section]`` of a TOML file written by the node (one line per key)."""
    pattern = re.compile(rf"(?ms)^(\[{re.escape(section)}\]\n.*?^){re.escape(key)} = [^\n]*$")
    new, count = pattern.subn(lambda m: f"{m.group(1)}{key} = {value}", text, count=1)
    if count != 1:
        raise DevClusterError(f"no {key} in [{section}] of the node's config")
    return new
