"""The ``tlog`` command: set up a depository, manage API keys, run the service.

::

    tlog init [--config FILE] [--host NAME]    create data dir, config, one key per log
    tlog keys create --product P --scopes submit,read[,audit,admin]
    tlog keys list | tlog keys revoke ID
    tlog vkey --product P                       print a log's verifier key
    tlog serve [--host 127.0.0.1] [--port 8080] (initialises the demo on first run)

Every command takes ``--data DIR`` (default ``./data``). Errors print one line on
stderr and exit 1 (2 for bad usage). Secrets are printed only where asked for:
``keys create`` prints the new key, and only the key, on stdout.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tlog.config import ConfigError
from tlog.errors import TlogError
from tlog.service import Service

__all__ = ["main"]

PROG = "tlog"
_DEMO_SCOPES = frozenset({"submit", "read", "audit"})


class _Usage(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _Usage(message)


def _add_data(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "--data", type=Path, default=default, help="data directory (default ./data)"
    )


def _build_parser() -> _Parser:
    parser = _Parser(prog=PROG, description="Bucket transparency log service")
    _add_data(parser, Path("data"))
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    init = sub.add_parser("init", help="create the data directory, config and log keys")
    _add_data(init, argparse.SUPPRESS)
    init.add_argument("--config", type=Path, help="TOML config (default: the built-in demo)")
    init.add_argument("--host", help="host name in every log's origin (<host>/logs/<product>)")

    keys = sub.add_parser("keys", help="manage API keys")
    _add_data(keys, argparse.SUPPRESS)
    ksub = keys.add_subparsers(dest="keys_command", required=True, parser_class=_Parser)
    create = ksub.add_parser("create", help="create an API key and print it")
    _add_data(create, argparse.SUPPRESS)
    create.add_argument("--product", required=True)
    create.add_argument("--scopes", required=True, help="comma-separated: submit,read,audit,admin")
    klist = ksub.add_parser("list", help="list API keys (never their secrets)")
    _add_data(klist, argparse.SUPPRESS)
    revoke = ksub.add_parser("revoke", help="revoke an API key")
    _add_data(revoke, argparse.SUPPRESS)
    revoke.add_argument("key_id")

    vkey = sub.add_parser("vkey", help="print a log's verifier key")
    _add_data(vkey, argparse.SUPPRESS)
    vkey.add_argument("--product", required=True)

    serve = sub.add_parser("serve", help="run the HTTP service")
    _add_data(serve, argparse.SUPPRESS)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8080)
    return parser


def _print_logs(service: Service) -> None:
    for name in service.config.products:
        log = service.product_log(name)
        print(f"log {name}: origin {log.origin}")
        print(f"  vkey {log.vkey}")


def _cmd_init(args: argparse.Namespace) -> int:
    service = Service.init(args.data, config_path=args.config, host=args.host)
    try:
        _print_logs(service)
    finally:
        service.close()
    return 0


def _cmd_keys(args: argparse.Namespace) -> int:
    service = Service.open(args.data)
    try:
        if args.keys_command == "create":
            if args.product not in service.config.products:
                raise ConfigError(f"no product named {args.product!r}")
            scopes = {s.strip() for s in args.scopes.split(",") if s.strip()}
            _, token = service.keys.create(args.product, scopes)
            print(token)
        elif args.keys_command == "list":
            for key in service.keys.list():
                state = "revoked" if key.revoked_at is not None else "active"
                print(f"{key.key_id}  {key.product}  {','.join(key.scopes)}  {state}")
        else:
            key = service.keys.revoke(args.key_id)
            print(f"revoked {key.key_id}")
    finally:
        service.close()
    return 0


def _cmd_vkey(args: argparse.Namespace) -> int:
    service = Service.open(args.data)
    try:
        print(service.product_log(args.product).vkey)
    finally:
        service.close()
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from tlog.http import create_app

    if not Service.initialized(args.data):
        service = Service.init(args.data)
        print(f"initialised the demo depository in {args.data}")
        _print_logs(service)
        print("demo API keys (scopes submit,read,audit); shown once, store them now:")
        for name in service.config.products:
            _, token = service.keys.create(name, _DEMO_SCOPES)
            print(f"  {name}: {token}")
    else:
        service = Service.open(args.data)
    sys.stdout.flush()
    try:
        app = create_app(service)
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    finally:
        service.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tlog`` command line; return the exit code."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except _Usage as exc:
        print(f"{PROG}: usage error: {exc}", file=sys.stderr)
        return 2
    commands = {"init": _cmd_init, "keys": _cmd_keys, "vkey": _cmd_vkey, "serve": _cmd_serve}
    try:
        return commands[args.command](args)
    except TlogError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
