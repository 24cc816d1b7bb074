"""The ``tlog`` command: set up a depository, manage API keys, run the service.

::

    tlog init [--config FILE] [--host NAME]    create data dir, config, one key per log
    tlog keys create --product P --scopes submit,read[,audit,admin]
    tlog keys list | tlog keys revoke ID
    tlog keys unfreeze ID [--owner-key FILE]    (owner-signed)
    tlog governance status | resume --reason TEXT | approve-config  (owner-signed)
    tlog governance hold --case ID --product P [--artifact ID] | release --case ID | expire
    tlog fsck                                   re-hash everything; exit 1 on a mismatch
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

from tlog.config import ConfigError, fingerprint
from tlog.errors import TlogError
from tlog.governance import sign_request
from tlog.integrity import check_log
from tlog.keys import load_key_any
from tlog.service import Service
from verifier.note import Signer

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

    unfreeze = ksub.add_parser("unfreeze", help="unfreeze a key (owner-signed)")
    _add_data(unfreeze, argparse.SUPPRESS)
    unfreeze.add_argument("key_id")
    _add_owner(unfreeze)

    gov = sub.add_parser("governance", help="state, owner-signed resume and config approval")
    _add_data(gov, argparse.SUPPRESS)
    gsub = gov.add_subparsers(dest="gov_command", required=True, parser_class=_Parser)
    status = gsub.add_parser("status", help="print state, reason and incident")
    _add_data(status, argparse.SUPPRESS)
    resume = gsub.add_parser("resume", help="return to NORMAL (owner-signed, audited)")
    _add_data(resume, argparse.SUPPRESS)
    resume.add_argument("--reason", required=True)
    _add_owner(resume)
    approve = gsub.add_parser("approve-config", help="approve the config in force (owner)")
    _add_data(approve, argparse.SUPPRESS)
    _add_owner(approve)

    hold = gsub.add_parser("hold", help="place a legal hold (owner-signed, audited)")
    _add_data(hold, argparse.SUPPRESS)
    hold.add_argument("--case", required=True)
    hold.add_argument("--product", required=True)
    hold.add_argument("--artifact")
    _add_owner(hold)
    release = gsub.add_parser("release", help="release a legal hold (owner-signed, audited)")
    _add_data(release, argparse.SUPPRESS)
    release.add_argument("--case", required=True)
    _add_owner(release)
    expire = gsub.add_parser("expire", help="remove bodies past retention, except held ones")
    _add_data(expire, argparse.SUPPRESS)

    fsck = sub.add_parser("fsck", help="re-hash every leaf and tile against the checkpoints")
    _add_data(fsck, argparse.SUPPRESS)

    vkey = sub.add_parser("vkey", help="print a log's verifier key")
    _add_data(vkey, argparse.SUPPRESS)
    vkey.add_argument("--product", required=True)

    serve = sub.add_parser("serve", help="run the HTTP service")
    _add_data(serve, argparse.SUPPRESS)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8080)
    return parser


def _add_owner(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--owner-key",
        type=Path,
        help="owner key file (default: <data>/keys/owner.key, where tlog init puts it)",
    )


def _owner(args: argparse.Namespace, service: Service) -> Signer:
    return load_key_any(args.owner_key or service.owner_key_path)


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
        elif args.keys_command == "unfreeze":
            note = sign_request(_owner(args, service), "unfreeze", key=args.key_id)
            service.governance.open_request(note, "unfreeze")
            service.keys.set_frozen(args.key_id, False, {"request": note})
            print(f"unfrozen {args.key_id}")
        elif args.keys_command == "list":
            for key in service.keys.list():
                state = "revoked" if key.revoked_at is not None else "active"
                state = "frozen" if key.frozen and key.revoked_at is None else state
                print(f"{key.key_id}  {key.product}  {','.join(key.scopes)}  {state}")
        else:
            key = service.keys.revoke(args.key_id)
            print(f"revoked {key.key_id}")
    finally:
        service.close()
    return 0


def _cmd_governance(args: argparse.Namespace) -> int:
    service = Service.open(args.data)
    try:
        gov = service.governance
        if args.gov_command == "resume":
            note = sign_request(_owner(args, service), "resume", reason=args.reason)
            gov.resume(note)
        elif args.gov_command == "approve-config":
            fp = fingerprint(service.config)
            note = sign_request(_owner(args, service), "approve-config", fingerprint=fp)
            gov.approve_config(note)
            print(f"approved config {fp}")
        elif args.gov_command == "hold":
            fields = {"case": args.case, "product": args.product}
            if args.artifact:
                fields["artifact"] = args.artifact
            held = gov.hold(sign_request(_owner(args, service), "hold", **fields))
            print(f"hold placed: case {held['case']} on {held['product']}")
        elif args.gov_command == "release":
            released = gov.release(sign_request(_owner(args, service), "release", case=args.case))
            print(f"hold released: case {released['case']}")
        elif args.gov_command == "expire":
            for item in gov.expire_bodies():
                print(f"expired body of {item['product']} entry {item['index']}")
        state = gov.state()
        print(f"state {state.state}")
        print(f"reason {state.reason or '-'}")
        incident = "-" if state.incident_index is None else state.incident_index
        print(f"incident_index {incident}")
        print(f"config_fingerprint {gov.approved_fingerprint() or '-'}")
    finally:
        service.close()
    return 0


def _cmd_fsck(args: argparse.Namespace) -> int:
    service = Service.open(args.data)
    try:
        problems = 0
        for name, log in sorted(service.store.logs.items()):
            report = check_log(log)
            print(f"{name}: {report.summary()}")
            if not report.ok:
                problems += 1
                service.governance.integrity_violation(name, report)
    finally:
        service.close()
    return 1 if problems else 0


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
    commands = {
        "init": _cmd_init,
        "keys": _cmd_keys,
        "governance": _cmd_governance,
        "fsck": _cmd_fsck,
        "vkey": _cmd_vkey,
        "serve": _cmd_serve,
    }
    try:
        return commands[args.command](args)
    except TlogError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
