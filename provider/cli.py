"""The gpu-provider command line: parses arguments, calls the library, maps errors to exit codes.

Exit codes: 0 success; 1 the input is invalid (or a command failed); 2 usage error (bad flag, missing
file). Nothing imports this module.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import sdl

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
    from provider.devcluster import DevClusterError, cli_command

    try:
        return cli_command(args)
    except DevClusterError as e:
        print(f"devcluster: {e}", file=sys.stderr)
        return EXIT_INVALID


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
    up.add_argument("--timeout", type=float, default=180.0, metavar="SECONDS", help="how long to wait for readiness")
    s.add_parser("down", help="stop every process it started and remove its state")
    s.add_parser("status", help="show components, nodes and the kubeconfig path")
    for cmd in s.choices.values():
        cmd.add_argument(
            "--state-dir",
            metavar="DIR",
            help="where the cluster keeps its state (default: ~/.cache/gpu-provider/devcluster/state)",
        )
    p.set_defaults(func=_cmd_devcluster)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpu-provider",
        description="Sell Kubernetes GPU capacity on a decentralized marketplace (Akash-compatible).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_sdl(sub)
    _add_devcluster(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except _UsageError as e:
        parser.print_usage(sys.stderr)
        print(f"gpu-provider: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
