"""``tlog-verify``: check checkpoints and receipts offline against pinned verifier keys.

Exit status: 0 when everything verified, 1 when verification failed (one line on
stderr says why), 2 for bad usage or input that could not be read.

Worked example::

    $ tlog-verify checkpoint checkpoint.txt \\
          --vkey 'example.com/log/testdata+33d7b496+AeHTu4Q3hEIMHNqc6fASMsq3rKNx280NI+oO5xCFkkSx'
    verified checkpoint
    origin:    example.com/log/testdata
    size:      15
    root:      rKbDipCvhuX1GZ7g5BBe8sA6BbJ7ja/1nk427v383cs=
    signed by: example.com/log/testdata

    $ tlog-verify receipt entry.tlog-proof --vkey "$VKEY" --json
    {"ok": true, "kind": "receipt", "origin": ..., "index": 645, ...}

This module is the only one in ``verifier`` that reads files.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from verifier.checkpoint import open_checkpoint_note
from verifier.errors import VerificationError
from verifier.note import VerifierKey, parse_vkey
from verifier.receipt import verify_receipt

__all__ = ["MAX_INPUT_BYTES", "main"]

PROG = "tlog-verify"
MAX_INPUT_BYTES = 4 * 1024 * 1024
"""Largest input file read; a receipt with a 64 KiB leaf is under 100 KiB."""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class _UsageError(Exception):
    """Bad command line or unreadable input: exit status 2."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that reports errors by raising, so main() prints one line."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see {self.prog} --help)")


def _read_input(path: str) -> bytes:
    """Return the bytes of ``path`` (``-`` is stdin); raises _UsageError if unreadable."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
        else:
            with open(path, "rb") as f:
                data = f.read(MAX_INPUT_BYTES + 1)
    except OSError as err:
        raise _UsageError(f"cannot read {path}: {err.strerror or err}") from None
    if len(data) > MAX_INPUT_BYTES:
        raise _UsageError(f"{path} is larger than {MAX_INPUT_BYTES} bytes; not reading it")
    return data


def _parse_keys(vkeys: Sequence[str]) -> list[VerifierKey]:
    """Return the --vkey values as keys; raises _UsageError for a malformed one."""
    keys = []
    for vkey in vkeys:
        try:
            keys.append(parse_vkey(vkey.strip()))
        except VerificationError as err:
            raise _UsageError(f"--vkey: {err}") from None
    return keys


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _cmd_checkpoint(args: argparse.Namespace) -> dict[str, Any]:
    """Verify a signed checkpoint; return the facts to print."""
    keys = _parse_keys(args.vkey)
    data = _read_input(args.file)
    cp, note = open_checkpoint_note(data, keys, origin=args.origin)
    return {
        "kind": "checkpoint",
        "origin": cp.origin,
        "size": cp.size,
        "root": _b64(cp.root),
        "extensions": list(cp.extensions),
        "signed_by": [key.name for key in note.verified_by],
    }


def _cmd_receipt(args: argparse.Namespace) -> dict[str, Any]:
    """Verify a receipt (and the leaf file, if given); return the facts to print."""
    keys = _parse_keys(args.vkey)
    data = _read_input(args.file)
    leaf = _read_input(args.leaf) if args.leaf is not None else None
    verified = verify_receipt(data, keys, leaf=leaf, origin=args.origin)
    leaf_bytes = verified.leaf if verified.leaf is not None else b""
    return {
        "kind": "receipt",
        "origin": verified.origin,
        "size": verified.size,
        "root": _b64(verified.root),
        "index": verified.index,
        "leaf_size": len(leaf_bytes),
        "leaf_sha256": hashlib.sha256(leaf_bytes).hexdigest(),
        "leaf_hash": _b64(verified.leaf_hash),
        "signed_by": list(verified.signed_by),
    }


def _render_text(result: dict[str, Any]) -> str:
    """Return the human-readable report of a verified result."""
    rows = [("origin", result["origin"]), ("size", result["size"]), ("root", result["root"])]
    if result["kind"] == "receipt":
        rows += [
            ("index", result["index"]),
            ("leaf", f"{result['leaf_size']} bytes, sha256 {result['leaf_sha256']}"),
            ("leaf hash", result["leaf_hash"]),
        ]
    for ext in result.get("extensions", []):
        rows.append(("extension", ext))
    rows.append(("signed by", ", ".join(result["signed_by"])))
    width = max(len(name) for name, _ in rows) + 2
    lines = [f"verified {result['kind']}"]
    lines += [f"{name + ':':<{width}}{value}" for name, value in rows]
    return "\n".join(lines)


def _add_common(sub: argparse.ArgumentParser, what: str) -> None:
    sub.add_argument("file", metavar="FILE", help=f"the {what} to verify, or - for stdin")
    sub.add_argument(
        "--vkey",
        action="append",
        required=True,
        metavar="VKEY",
        help="trusted verifier key name+keyid+base64key (repeat for several)",
    )
    sub.add_argument("--origin", help="fail unless the checkpoint names this log origin")
    sub.add_argument("--json", action="store_true", help="print a JSON object instead of text")


Command = Callable[[argparse.Namespace], dict[str, Any]]


def _build_parser() -> _Parser:
    """Return the argument parser; each subcommand sets ``run`` to its handler."""
    parser = _Parser(
        prog=PROG,
        description="Verify transparency log checkpoints and receipts offline.",
    )
    subs = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subs.required = True

    checkpoint = subs.add_parser(
        "checkpoint", help="verify a signed checkpoint (C2SP tlog-checkpoint)"
    )
    _add_common(checkpoint, "signed checkpoint")
    checkpoint.set_defaults(run=_cmd_checkpoint)

    receipt = subs.add_parser("receipt", help="verify a receipt (C2SP tlog-proof .tlog-proof)")
    _add_common(receipt, "receipt")
    receipt.add_argument(
        "--leaf", metavar="FILE", help="also require the receipt to be for this leaf's bytes"
    )
    receipt.set_defaults(run=_cmd_receipt)
    return parser


def _fail(message: str, code: int, as_json: bool, kind: str = "usage") -> int:
    """Print one ``tlog-verify: <message>`` line on stderr (and a JSON object if asked)."""
    one_line = " ".join(message.split())
    if as_json:
        print(json.dumps({"ok": False, "error": kind, "message": one_line}))
    print(f"{PROG}: {one_line}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tlog-verify`` with ``argv`` (default: the process arguments); return the
    exit status: 0 verified, 1 verification failed, 2 bad usage or unreadable input."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in args_list
    parser = _build_parser()
    try:
        args = parser.parse_args(args_list)
        run: Command = args.run
        result = run(args)
    except SystemExit as exit_:  # --help and --version exit through argparse
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    except _UsageError as err:
        return _fail(str(err), EXIT_USAGE, as_json)
    except VerificationError as err:
        return _fail(str(err), EXIT_FAILED, as_json, type(err).__name__)
    if args.json:
        print(json.dumps({"ok": True, **result}))
    else:
        print(_render_text(result))
    return EXIT_OK
