"""The gpu-provider command line: parses arguments, calls the library, maps errors to exit codes.

Exit codes: 0 success; 1 the input is invalid (or a command failed); 2 usage error (bad flag, missing
file). Nothing imports this module.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import sdl
from provider.errors import ProviderError

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


class _UsageError(Exception):
    pass


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    p = Path(path)
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise _UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise _UsageError(f"{path}: is a directory, not an SDL file") from None
    except OSError as e:
        raise _UsageError(f"{path}: cannot read ({e.strerror})") from None


def _print_problems(problems: Sequence[sdl.Problem], source: str) -> None:
    for p in problems:
        print(p.render(source), file=sys.stderr if p.severity == "warning" else sys.stdout)


def _parse_one(path: str, strict: bool) -> sdl.Deployment | None:
    try:
        deployment = sdl.parse(_read(path), source=path, strict=strict)
    except sdl.SdlError as e:
        _print_problems([*e.problems, *e.warnings], path)
        return None
    _print_problems(deployment.warnings, path)
    return deployment


def _cmd_sdl_check(args: argparse.Namespace) -> int:
    for path in args.files:  # usage errors first, before any output
        if path != "-" and not Path(path).is_file():
            raise _UsageError(f"{path}: no such file")
    invalid = 0
    for path in args.files:
        if _parse_one(path, args.strict) is None:
            invalid += 1
    if not args.quiet:
        total = len(args.files)
        print(f"{total - invalid} of {total} SDL file(s) valid", file=sys.stderr)
    return EXIT_INVALID if invalid else EXIT_OK


def _cmd_sdl_show(args: argparse.Namespace) -> int:
    deployment = _parse_one(args.file, args.strict)
    if deployment is None:
        return EXIT_INVALID
    if args.what == "version":
        print(deployment.version.hex())
        return EXIT_OK
    value = deployment.manifest_json() if args.what == "manifest" else deployment.groups_json()
    print(json.dumps(value, indent=None if args.compact else 2))
    return EXIT_OK


def _add_sdl(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("sdl", help="check an SDL and show what Akash derives from it")
    s = p.add_subparsers(dest="sdl_command", required=True, metavar="COMMAND")
    strict_help = "also reject what only Akash's JSON schema rejects (non-uakt/uact denoms, unknown keys, ...)"
    check = s.add_parser("check", help="validate SDL files; prints FILE:LINE:COL: message per problem")
    check.add_argument("files", nargs="+", metavar="FILE", help="SDL file(s); - reads standard input")
    check.add_argument("--strict", action="store_true", help=strict_help)
    check.add_argument("-q", "--quiet", action="store_true", help="no summary line")
    check.set_defaults(func=_cmd_sdl_check)
    for what, text in (
        ("manifest", "print the manifest JSON a tenant sends to the provider"),
        ("groups", "print the group specs JSON that become orders on chain"),
        ("version", "print the deployment version hash (hex)"),
    ):
        cmd = s.add_parser(what, help=text)
        cmd.add_argument("file", metavar="FILE", help="SDL file; - reads standard input")
        cmd.add_argument("--strict", action="store_true", help=strict_help)
        if what != "version":
            cmd.add_argument("--compact", action="store_true", help="one line of JSON")
        cmd.set_defaults(func=_cmd_sdl_show, what=what)


def _cmd_devcluster(args: argparse.Namespace) -> int:
    from provider.devcluster.cli import cli_command

    return cli_command(args)


def _add_devcluster(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "devcluster",
        help="a real local Kubernetes control plane with simulated GPU nodes (for tests and the demo)",
    )
    s = p.add_subparsers(dest="devcluster_command", required=True, metavar="COMMAND")
    up = s.add_parser("up", help="build (once) and start the cluster; prints the kubeconfig path")
    up.add_argument(
        "--pool", metavar="SPEC", help="GPU node pool, e.g. 'h100:4x8,a100:2x8,rtx4090:2x4,cpu:1' (default)"
    )
    up.add_argument("--taint", action="store_true", help="taint GPU nodes with nvidia.com/gpu=present:NoSchedule")
    up.add_argument("--timeout", type=_seconds, default=180.0, metavar="SECONDS", help="how long to wait for readiness")
    up.add_argument(
        "--real-node",
        action="store_true",
        help="add one real worker node (kubelet, containerd, CNI, kube-proxy, CoreDNS, NetworkPolicy, a fake GPU "
        "device plugin), a registry and an ingress controller; needs root, one per host",
    )
    up.add_argument(
        "--real-node-gpus", default="h200:2", metavar="MODEL:COUNT", help="fake GPUs the real node advertises"
    )
    s.add_parser("down", help="stop every process it started, undo its host changes and remove its state")
    s.add_parser("status", help="show components, nodes and the kubeconfig path")
    restart = s.add_parser("restart", help="stop one component and start it again the same way (recovery drills)")
    restart.add_argument("component", metavar="COMPONENT", help="e.g. kube-apiserver, etcd, kubelet (see status)")
    image = s.add_parser("image", help="images for the real node, without Docker")
    isub = image.add_subparsers(dest="image_command", required=True, metavar="COMMAND")
    build = isub.add_parser("build", help="pack DIR as one layer, push it as NAME to the cluster's registry")
    build.add_argument("name", metavar="NAME", help="repo[:tag], e.g. tools/echo:1")
    build.add_argument("dir", metavar="DIR", help="the image's root filesystem")
    build.add_argument("--entrypoint", metavar="ARGS", help="comma-separated, e.g. /bin/sh,-c")
    build.add_argument("--cmd", metavar="ARGS", help="comma-separated default arguments")
    own = isub.add_parser(
        "provider",
        help="build the provider's Dockerfile with buildah (base from Debian packages); push it to the "
        "cluster's registry with --push; prints the image (or its pull reference)",
    )
    own.add_argument("--tag", default="dev", help="image tag (default dev)")
    own.add_argument("--push", action="store_true", help="push to the dev cluster's registry")
    for cmd in [*s.choices.values(), build, own]:
        if cmd is image:
            continue
        cmd.add_argument(
            "--state-dir",
            metavar="DIR",
            help="where the cluster keeps its state (default: ~/.cache/gpu-provider/devcluster/state)",
        )
    p.set_defaults(func=_cmd_devcluster)


def _cmd_akash_devnet(args: argparse.Namespace) -> int:
    import time

    from provider.devcluster.akash import DEFAULT_STATE, AkashDevnet

    devnet = AkashDevnet(Path(args.state_dir) if args.state_dir else DEFAULT_STATE)
    if args.devnet_command == "up":
        started = time.monotonic()
        devnet.up(timeout=args.timeout, progress=True)
        print(json.dumps(devnet.status(), indent=2))
        print(f"akash-devnet: ready in {time.monotonic() - started:.1f}s", file=sys.stderr)
        return EXIT_OK
    if args.devnet_command == "down":
        devnet.down()
        return EXIT_OK
    status = devnet.status()
    print(json.dumps(status, indent=2))
    return EXIT_OK if status["running"] else 1


def _add_akash_devnet(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "akash-devnet", help="a local Akash devnet: Akash's own node built from source, one validator on loopback"
    )
    s = p.add_subparsers(dest="devnet_command", required=True, metavar="COMMAND")
    up = s.add_parser("up", help="build the node (once), start a fresh devnet; prints its endpoints and keys")
    up.add_argument("--timeout", type=_seconds, default=180.0, metavar="SECONDS", help="how long to wait for readiness")
    s.add_parser("down", help="stop the node and remove the devnet's state")
    s.add_parser("status", help="height, endpoints and keys (exit 1 when not running)")
    for cmd in s.choices.values():
        cmd.add_argument(
            "--state-dir",
            metavar="DIR",
            help="where the devnet keeps its state (default: ~/.cache/gpu-provider/akash-devnet/state)",
        )
    p.set_defaults(func=_cmd_akash_devnet)


def _cmd_inventory(args: argparse.Namespace) -> int:
    from provider.config import kubeconfig_from_env
    from provider.inventory.reservations import Reservations
    from provider.inventory.service import ClusterInventory
    from provider.kube import Kube

    service = ClusterInventory(Kube(args.kubeconfig or kubeconfig_from_env()), Reservations())
    service.refresh()
    inventory = service.current
    if args.json:
        print(json.dumps(_inventory_json(inventory), indent=2))
        return EXIT_OK
    header = f"{'NODE':<28} {'GPU':<12} {'RAM':<7} {'IF':<5} {'TOTAL':>5} {'ALLOC':>5} {'RSRV':>5} {'FREE':>5}  HEALTH / NOTE"
    print(header)
    for n in inventory.nodes:
        health = "" if n.healthy_gpus is None else f"{n.healthy_gpus}/{n.gpus_total} healthy"
        note = "; ".join(x for x in (health, n.sharing, n.unsellable) if x)
        print(
            f"{n.name:<28} {n.model or '-':<12} {n.ram_class or '-':<7} {n.interface or '-':<5} "
            f"{n.gpus_total:>5} {n.gpus_allocated:>5} {n.gpus_reserved:>5} {n.gpus_free:>5}  {note}"
        )
    print()
    print(f"{'MODEL':<12} {'NODES':>5} {'TOTAL':>5} {'ALLOC':>5} {'RSRV':>5} {'FREE':>5}")
    for m in inventory.by_model():
        print(f"{m.model:<12} {m.nodes:>5} {m.total:>5} {m.allocated:>5} {m.reserved:>5} {m.free:>5}")
    return EXIT_OK


def _inventory_json(inventory: Any) -> Any:
    from dataclasses import asdict

    return {
        "nodes": [asdict(n) for n in inventory.nodes],
        "models": [asdict(m) for m in inventory.by_model()],
    }


def _cmd_agent(args: argparse.Namespace) -> int:
    import logging
    import time

    from provider.config import kubeconfig_from_env, load, node_name_from_env
    from provider.inventory.agent import Agent
    from provider.inventory.nvml import Probe
    from provider.kube import Kube
    from provider.logs import setup_logging

    setup_logging(args.log_level, args.log_format)
    node = args.node_name or node_name_from_env()
    if not node:
        raise _UsageError("no node name: pass --node-name or set NODE_NAME (the DaemonSet sets it from spec.nodeName)")
    catalogue = load(Path(args.config)).inventory.catalogue() if args.config else None
    probe = Probe(catalogue) if catalogue is not None else Probe()
    try:
        agent = Agent(probe, Kube(args.kubeconfig or kubeconfig_from_env()), node)
        while True:
            try:
                agent.sync()
            except ProviderError as e:
                if args.once:
                    raise
                logging.getLogger("provider.agent").warning("sync failed node=%s error=%r", node, str(e))
            if args.once:
                return EXIT_OK
            time.sleep(args.interval)
    finally:
        probe.close()


def _add_inventory(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    inv = sub.add_parser("inventory", help="GPU inventory per node and model: total / allocated / reserved / free")
    inv.add_argument(
        "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster credentials)"
    )
    inv.add_argument("--json", action="store_true", help="machine-readable output")
    inv.set_defaults(func=_cmd_inventory)
    agent = sub.add_parser("agent", help="node agent: publish this node's NVML GPU facts on its Node object")
    agent.add_argument("--node-name", help="this node's name (default: $NODE_NAME)")
    agent.add_argument(
        "--config", help="the provider's config file: its inventory.gpu_models name GPUs the built-in table lacks"
    )
    agent.add_argument(
        "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster credentials)"
    )
    agent.add_argument(
        "--interval", type=_seconds, default=30.0, metavar="SECONDS", help="seconds between reads (default 30)"
    )
    agent.add_argument("--once", action="store_true", help="read and publish once, then exit")
    agent.set_defaults(func=_cmd_agent)
    _add_logging(agent)


def _cmd_chain_serve(args: argparse.Namespace) -> int:
    from provider.app import serve_mock_chain
    from provider.chain.mock.state import ChainParams

    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.expose:
        raise _UsageError(
            f"--host {args.host} is not a loopback address: the mock chain is a test network (anyone who reaches "
            "it may use its faucet), so it serves on loopback unless --expose says to serve on another address "
            "(a dev cluster node's bridge, or a pod's own network)"
        )
    params = ChainParams(
        bid_timeout_blocks=args.bid_timeout_blocks,
        order_timeout_blocks=args.order_timeout_blocks,
        faucet=not args.no_faucet,
    )
    serve_mock_chain(Path(args.db).expanduser(), args.host, args.port, args.block_interval, params)
    return EXIT_OK


def _add_chain(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("chain", help="the embedded mock chain (an Akash-like market on one machine)")
    s = p.add_subparsers(dest="chain_command", required=True, metavar="COMMAND")
    serve = s.add_parser("serve", help="run the mock chain: HTTP/JSON on loopback, state in SQLite")
    serve.add_argument(
        "--db", default="~/.local/state/gpu-provider/mock-chain.sqlite", help="SQLite state file (kept across restarts)"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument(
        "--expose", action="store_true", help="allow a non-loopback --host (pods of a dev cluster, a pod's network)"
    )
    serve.add_argument("--port", type=_port, default=26680, help="TCP port (default 26680)")
    serve.add_argument(
        "--block-interval",
        type=_seconds,
        default=6.0,
        metavar="SECONDS",
        help="seconds per block (default 6, like Akash)",
    )
    serve.add_argument(
        "--bid-timeout-blocks", type=_count, default=50, help="blocks before an unanswered bid closes (default 50)"
    )
    serve.add_argument(
        "--order-timeout-blocks",
        type=_count,
        default=0,
        help="blocks before an order nobody leased closes (default 0: never)",
    )
    serve.add_argument("--no-faucet", action="store_true", help="disable the /faucet endpoint")
    serve.set_defaults(func=_cmd_chain_serve)


AKASH_TENANT_COMMANDS = ("send-manifest", "lease-status", "logs", "events", "token", "bids")


def _akash_tenant(args: argparse.Namespace) -> tuple[Any, Any]:
    """The tenant's Akash chain and a minter of ES256K tokens for its key (``--chain-kind akash``)."""
    if args.tenant_command not in AKASH_TENANT_COMMANDS:
        raise _UsageError(
            f"on Akash, `tenant {args.tenant_command}` is done with Akash's own CLI or Console (akash tx ...); "
            f"this command does {', '.join(AKASH_TENANT_COMMANDS)} with --chain-kind akash"
        )
    if not args.key_file:
        raise _UsageError("--chain-kind akash needs --key-file: a file with the tenant's mnemonic or hex key")
    from provider.chain.akash import jwt as akash_jwt
    from provider.chain.akash.chain import AkashChain
    from provider.chain.akash.keys import AkashKeyError, load_key_file, read_passphrase

    passphrase = None
    if args.key_passphrase_file:
        try:
            passphrase = read_passphrase(Path(args.key_passphrase_file).expanduser())
        except AkashKeyError as e:  # a usage error here, as before
            raise _UsageError(str(e)) from None
    key = load_key_file(Path(args.key_file).expanduser(), "tenant", passphrase)
    return AkashChain(args.akash_rest, args.akash_rpc, key), (
        lambda scope, lifetime: akash_jwt.mint(key, scope, lifetime)
    )


def _tenant_chain(args: argparse.Namespace) -> tuple[Any, Any]:
    if args.chain_kind == "akash":
        return _akash_tenant(args)
    from provider.chain.client import ChainClient
    from provider.chain.keys import Keyring

    return ChainClient(args.chain, Keyring(Path(args.keyring).expanduser()).get(args.key)), None


def _cmd_tenant(args: argparse.Namespace) -> int:
    import asyncio

    from provider import tenant
    from provider.chain.keys import Keyring

    keyring = Keyring(Path(args.keyring).expanduser())
    cmd = args.tenant_command
    if cmd == "keys" and args.chain_kind == "mock":
        if args.keys_command == "add":
            print(keyring.add(args.name).address)
        elif args.keys_command == "list":
            for name in keyring.names():
                print(f"{name}\t{keyring.get(name).address}")
        else:
            print(keyring.get(args.name).address)
        return EXIT_OK

    chain, minter = _tenant_chain(args)

    async def go() -> Any:
        try:
            if cmd == "fund":
                await chain.fund(chain.key.address, args.denom, args.amount)
                return await chain.account(chain.key.address)
            if cmd == "deploy":
                return await tenant.deploy(chain, _read(args.sdl), args.sdl, args.deposit, args.dseq, args.wait)
            if cmd == "bids":
                return [
                    {"bid": str(b.id), "state": b.state, "price": str(b.price.amount), "denom": b.price.denom}
                    for b in await chain.bids(owner=chain.address, dseq=args.dseq)
                ]
            if cmd == "accept":
                return await tenant.accept(chain, args.bid)
            if cmd == "send-manifest":
                sent = await tenant.send_manifest(chain, _read(args.sdl), args.sdl, args.dseq, minter=minter)
                return {"sent": sent}
            if cmd == "update":
                return await tenant.update(chain, _read(args.sdl), args.sdl, args.dseq)
            if cmd == "status":
                return await tenant.status(chain, args.dseq)
            if cmd == "lease-status":
                return await tenant.lease_call(chain, args.lease, "status", minter=minter)
            if cmd == "logs":
                return await tenant.lease_call(chain, args.lease, "logs", f"tail={args.tail}", minter=minter)
            if cmd == "events":
                return await tenant.lease_call(chain, args.lease, "kubeevents", minter=minter)
            if cmd == "token":
                if minter is not None:
                    return {"token": minter(args.scope or None, args.lifetime)}
                return {"token": tenant.token(chain, args.scope or None, args.lifetime)}
            return await tenant.close(chain, args.dseq)
        finally:
            await chain.aclose()

    print(json.dumps(asyncio.run(go()), indent=2, default=str))
    return EXIT_OK


def _add_tenant(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from provider.config import keyring_path_from_env

    p = sub.add_parser("tenant", help="the tenant side: keys, deploy an SDL, bids, accept, send the manifest, close")
    p.add_argument("--chain", default="http://127.0.0.1:26680", help="chain URL (default: the local mock chain)")
    p.add_argument("--keyring", default=str(keyring_path_from_env()), help="keyring file")
    p.add_argument("--key", default="tenant", help="key name to sign with (default: tenant)")
    p.add_argument(
        "--chain-kind",
        choices=("mock", "akash"),
        default="mock",
        help="mock (default) or akash: a real Akash node; then send-manifest, lease-status, logs, events, "
        "token and bids work with an Akash key (ES256K tokens), the rest is Akash's own CLI",
    )
    p.add_argument(
        "--akash-rpc", default="http://127.0.0.1:26657", help="Akash node's CometBFT RPC (--chain-kind akash)"
    )
    p.add_argument(
        "--akash-rest", default="http://127.0.0.1:1317", help="Akash node's REST gateway (--chain-kind akash)"
    )
    p.add_argument(
        "--key-file", help="the tenant's Akash key: its mnemonic, hex key or `akash keys export` (--chain-kind akash)"
    )
    p.add_argument("--key-passphrase-file", help="the passphrase of an exported --key-file")
    s = p.add_subparsers(dest="tenant_command", required=True, metavar="COMMAND")
    keys = s.add_parser("keys", help="manage keys in the local keyring")
    ks = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    ks.add_parser("add", help="create a key").add_argument("name", help="key name")
    ks.add_parser("show", help="print a key's address").add_argument("name", help="key name")
    ks.add_parser("list", help="list keys")
    fund = s.add_parser("fund", help="credit this key from the mock chain's faucet")
    fund.add_argument("--denom", choices=("uakt", "uact"), default="uakt", help="denom to credit (default uakt)")
    fund.add_argument("--amount", type=_amount, default="100000000", help="amount to credit (default 100000000)")
    deploy = s.add_parser("deploy", help="create a deployment from an SDL and show bids as they arrive")
    deploy.add_argument("sdl", help="SDL file of the deployment")
    deploy.add_argument("--deposit", type=_amount, default="5000000", help="escrow deposit in the SDL's denom")
    deploy.add_argument("--dseq", type=_dseq, help="deployment sequence (default: derived from the height)")
    deploy.add_argument("--wait", type=_seconds, default=15.0, help="seconds to watch for bids")
    bids = s.add_parser("bids", help="list the bids on a deployment")
    bids.add_argument("dseq", type=_dseq, help="deployment sequence number")
    accept = s.add_parser("accept", help="accept a bid: creates the lease")
    accept.add_argument("bid", help="OWNER/DSEQ/GSEQ/OSEQ/PROVIDER")
    send = s.add_parser("send-manifest", help="send the SDL's manifest to the providers holding its leases")
    send.add_argument("dseq", type=_dseq, help="deployment sequence number")
    send.add_argument("sdl", help="the SDL file the deployment was created from")
    upd = s.add_parser("update", help="give a deployment a new SDL version (same resources) and send its manifest")
    upd.add_argument("dseq", type=_dseq, help="deployment sequence number")
    upd.add_argument("sdl", help="the new SDL file")
    for name, text in (
        ("lease-status", "the provider's view of a lease: state, services, URIs, errors"),
        ("logs", "the lease's container output"),
        ("events", "the Kubernetes events of the lease's objects"),
    ):
        lp = s.add_parser(name, help=text)
        lp.add_argument("lease", help="DSEQ/GSEQ/OSEQ")
        if name == "logs":
            lp.add_argument("--tail", type=int, default=100, help="lines per container (-1: all)")
    tok = s.add_parser("token", help="print a JWT for the provider API, signed with this key")
    tok.add_argument("--scope", action="append", help="grant only this scope (repeatable; default: full access)")
    tok.add_argument("--lifetime", type=int, default=300, help="seconds the token is valid (default 300)")
    st = s.add_parser("status", help="deployment, orders, bids and leases")
    st.add_argument("dseq", type=_dseq, help="deployment sequence number")
    cl = s.add_parser("close", help="close the deployment (leases close, escrow refunds)")
    cl.add_argument("dseq", type=_dseq, help="deployment sequence number")
    p.set_defaults(func=_cmd_tenant)


def _cmd_provider_run(args: argparse.Namespace) -> int:
    import asyncio

    from provider import app
    from provider.config import load
    from provider.logs import setup_logging

    config = load(Path(args.config) if args.config else None)
    if args.check_config:
        import yaml

        print(yaml.safe_dump(config.effective(), sort_keys=False), end="")
        return EXIT_OK
    setup_logging(args.log_level, args.log_format)
    asyncio.run(app.run(config))
    return EXIT_OK


def _cmd_setup(args: argparse.Namespace) -> int:
    from provider.config import load
    from provider.deploy.deployer import Deployer
    from provider.kube import Kube

    config = load(Path(args.config) if args.config else None)
    kubeconfig = args.kubeconfig or (str(config.inventory.kubeconfig) if config.inventory.kubeconfig else None)
    deployer = Deployer(Kube(kubeconfig), config.deploy.settings(), config.deploy.namespace)
    deployer.install()
    print(f"installed the Manifest CRD and the namespace {config.deploy.namespace}")
    return EXIT_OK


def _cmd_maintenance(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from provider.bidding.engine import MAINTENANCE_FILE
    from provider.config import load
    from provider.files import write_private

    config = load(Path(args.config) if args.config else None)
    flag = config.provider.state_dir / MAINTENANCE_FILE
    if args.action == "on":
        config.provider.state_dir.mkdir(parents=True, exist_ok=True)
        since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        write_private(flag, f"since {since}: {args.reason or 'no reason given'}\n".encode())
        print(f"maintenance on: the daemon places no new bids (leases are still served); flag {flag}")
    elif args.action == "off":
        flag.unlink(missing_ok=True)
        note = " (the config's bidding.maintenance is still true)" if config.bidding.maintenance else ""
        print(f"maintenance off: bidding resumes within seconds, open orders included{note}")
    else:
        on = config.bidding.maintenance or flag.exists()
        why = flag.read_text().strip() if flag.exists() else ("bidding.maintenance in the config" if on else "")
        print(f"maintenance {'on' if on else 'off'}{': ' + why if why else ''}")
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from provider.demo import EXAMPLE, run_demo

    return run_demo(Path(args.sdl) if args.sdl else EXAMPLE, Path(args.state_dir) if args.state_dir else None)


def _add_provider(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    setup = sub.add_parser(
        "setup", help="install what the daemon needs in the cluster: the Manifest CRD and its namespace"
    )
    setup.add_argument("--config", help="YAML config file (its deploy.namespace and kubeconfig are used)")
    setup.add_argument("--kubeconfig", help="kubeconfig file (default: the config's, $KUBECONFIG, ~/.kube/config)")
    setup.set_defaults(func=_cmd_setup)
    demo = sub.add_parser(
        "demo",
        help="the whole flow on this machine, narrated: dev cluster, mock chain, daemon; deploy an SDL as a "
        "tenant, watch it come up, close it and show the escrow settled",
    )
    demo.add_argument("--sdl", help="the SDL to deploy (default sdl/examples/llm-inference.yaml)")
    demo.add_argument("--state-dir", help="the dev cluster's state directory (default: the usual one)")
    demo.set_defaults(func=_cmd_demo)
    maint = sub.add_parser(
        "maintenance", help="stop or resume bidding without a restart; running leases are served throughout"
    )
    maint.add_argument("action", choices=("on", "off", "status"), help="on: stop bidding; off: resume; status: show")
    maint.add_argument("--config", help="YAML config file (its provider.state_dir holds the flag)")
    maint.add_argument("--reason", help="why (shown by `maintenance status`)")
    maint.set_defaults(func=_cmd_maintenance)
    p = sub.add_parser("run", help="run the provider daemon: follow the chain, bid on orders the cluster can serve")
    p.add_argument("--config", help="YAML config file (see docs/configuration.md); defaults otherwise")
    p.add_argument(
        "--check-config",
        action="store_true",
        help="validate the config (file + environment), print the effective settings and exit",
    )
    p.set_defaults(func=_cmd_provider_run)
    _add_logging(p)


def _add_logging(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="least severe level logged (default info)",
    )
    p.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text: key=value lines; json: one JSON object per line (timestamps UTC RFC 3339 in both)",
    )


def _bounded(kind: type[int] | type[float], what: str, low: float, high: float) -> Callable[[str], Any]:
    """An argparse type: a number of ``kind`` within [low, high], or a usage error that says which."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is out of range for {what} ({low:g} to {high:g})")
        return value

    return parse


_port = _bounded(int, "a TCP port", 1, 65535)
_count = _bounded(int, "a whole number", 0, 2**31)
_dseq = _bounded(int, "a deployment sequence", 0, 2**63 - 1)
_seconds = _bounded(float, "a number of seconds", 0, 86_400)


def _amount(text: str) -> Any:
    from provider.money import Dec, MoneyError

    try:
        value = Dec.parse(text)
    except MoneyError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if value.atto <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be above 0")
    return value


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gpu-provider")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpu-provider",
        description="Sell Kubernetes GPU capacity on a decentralized marketplace (Akash-compatible).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}", help="print the version")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_sdl(sub)
    _add_devcluster(sub)
    _add_akash_devnet(sub)
    _add_inventory(sub)
    _add_chain(sub)
    _add_tenant(sub)
    _add_provider(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except ProviderError as e:
        print(f"gpu-provider: {e}", file=sys.stderr)
        return EXIT_INVALID
    except _UsageError as e:
        parser.print_usage(sys.stderr)
        print(f"gpu-provider: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
