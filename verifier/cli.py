"""``tlog-verify``: check checkpoints, receipts, consistency and whole logs against pinned keys.

Commands (every one takes ``--vkey`` once per trusted key, and ``--json``):

``checkpoint FILE``
    verify a signed checkpoint (C2SP tlog-checkpoint), offline.
``receipt FILE [--leaf FILE] [--body FILE] [--log URL]``
    verify a ``.tlog-proof`` receipt (C2SP tlog-proof) offline; with ``--log``, also
    fetch the log's latest checkpoint and a consistency proof to show the receipt's
    tree is still a prefix of today's tree; with ``--body``, check an artifact body
    against the SHA-256 and size the leaf commits to. The report separates what is
    PROVEN from the claims inside the entry that nothing proves.
``consistency OLD NEW [--proof FILE | --log URL]``
    verify that checkpoint NEW extends checkpoint OLD (RFC 9162 §2.1.4.2), with a
    proof file of base64 lines or a proof fetched from the log.
``log SOURCE [--state FILE] [--token TOKEN] [--progress]``
    audit a whole C2SP tlog-tiles log, from an ``http(s)://`` prefix or a local
    directory: every leaf, every tile, the root; with ``--state``, also that the log
    only grew since the last audit (see :mod:`verifier.audit`).

Exit status: 0 when everything verified, 1 when verification failed (one line on
stderr names the failure and the tile, index or URL involved; the log answering
with an HTTP error or too slowly counts as a failure), 2 for bad usage and I/O
problems (unreadable files, bad URLs, refused connections, an unusable state file).

Worked example::

    $ tlog-verify checkpoint checkpoint.txt \\
          --vkey 'example.com/log/testdata+33d7b496+AeHTu4Q3hEIMHNqc6fASMsq3rKNx280NI+oO5xCFkkSx'
    verified checkpoint
    origin:    example.com/log/testdata
    size:      15
    root:      rKbDipCvhuX1GZ7g5BBe8sA6BbJ7ja/1nk427v383cs=
    signed by: example.com/log/testdata

    $ tlog-verify log https://bucket.example/logs/gurukul --vkey "$VKEY" --state gurukul.json
    audited log
    ...

Bearer tokens for ``--log`` and ``log`` come from ``--token`` or, better (it stays
out of ``ps``), the ``TLOG_TOKEN`` environment variable. This module and
:mod:`verifier.client` are the only ones in ``verifier`` that read files.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TextIO

from verifier.audit import (
    AuditProgress,
    audit_log,
    verify_checkpoint_consistency,
    verify_receipt_in_log,
)
from verifier.checkpoint import open_checkpoint_note
from verifier.client import DEFAULT_TIMEOUT, fetch_consistency_proof, open_source
from verifier.envelope import decode_envelope
from verifier.errors import (
    BadProofShape,
    MalformedState,
    SourceUnavailable,
    VerificationError,
)
from verifier.note import VerifierKey, _b64decode_canonical, parse_vkey
from verifier.receipt import parse_receipt, verify_receipt

__all__ = ["MAX_INPUT_BYTES", "main"]

PROG = "tlog-verify"
MAX_INPUT_BYTES = 4 * 1024 * 1024
"""Largest input file read; a receipt with a 64 KiB leaf is under 100 KiB."""

TOKEN_ENV = "TLOG_TOKEN"  # noqa: S105 (a variable name, not a secret)
"""Environment variable holding the bearer token, when ``--token`` is not given."""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

# Failures that are the auditor's own I/O or input problems, not evidence against a log.
_EXIT_2_ERRORS = (SourceUnavailable, MalformedState)


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


def _hash_file(path: str) -> tuple[bytes, int]:
    """Return the SHA-256 and size of file ``path``, read in chunks (bodies may be big)."""
    digest = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
    except OSError as err:
        raise _UsageError(f"cannot read {path}: {err.strerror or err}") from None
    return digest.digest(), size


def _parse_keys(vkeys: Sequence[str]) -> list[VerifierKey]:
    """Return the --vkey values as keys; raises _UsageError for a malformed one."""
    keys = []
    for vkey in vkeys:
        try:
            keys.append(parse_vkey(vkey.strip()))
        except VerificationError as err:
            raise _UsageError(f"--vkey: {err}") from None
    return keys


def _token(args: argparse.Namespace) -> str | None:
    """Return the bearer token from --token or $TLOG_TOKEN (None if neither is set)."""
    token: str | None = args.token if args.token else os.environ.get(TOKEN_ENV) or None
    if token is not None and any(c in token for c in "\r\n"):
        raise _UsageError("the bearer token must be one line")
    return token


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


# --- checkpoint --------------------------------------------------------------------------


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


# --- receipt -----------------------------------------------------------------------------


def _cmd_receipt(args: argparse.Namespace) -> dict[str, Any]:
    """Verify a receipt (and the leaf, body and log, if given); return the facts to print.

    1. verify the receipt offline (checkpoint signature, inclusion proof);
    2. with --body, check the body against the leaf's body_sha256 and body_size;
    3. with --log, check the receipt's tree is a prefix of the log's latest tree.
    """
    keys = _parse_keys(args.vkey)
    data = _read_input(args.file)
    leaf = _read_input(args.leaf) if args.leaf is not None else None
    body = _hash_file(args.body) if args.body is not None else None
    token = _token(args)
    receipt = parse_receipt(data)
    verified = verify_receipt(receipt, keys, leaf=leaf, origin=args.origin)
    leaf_bytes = verified.leaf if verified.leaf is not None else b""
    envelope = decode_envelope(leaf_bytes)
    key_labels = [k.label for k in keys if k.name in verified.signed_by]

    proven = [
        f"the leaf with leaf hash {_b64(verified.leaf_hash)} ({len(leaf_bytes)} bytes, "
        f"sha256 {hashlib.sha256(leaf_bytes).hexdigest()}) is entry {verified.index} of the "
        f"tree of size {verified.size} with root {_b64(verified.root)} in log {verified.origin}",
        f"that tree head is signed by {', '.join(key_labels)}, a key pinned with --vkey",
    ]
    not_proven: list[str] = []
    result: dict[str, Any] = {
        "kind": "receipt",
        "origin": verified.origin,
        "size": verified.size,
        "root": _b64(verified.root),
        "index": verified.index,
        "leaf_size": len(leaf_bytes),
        "leaf_sha256": hashlib.sha256(leaf_bytes).hexdigest(),
        "leaf_hash": _b64(verified.leaf_hash),
        "signed_by": list(verified.signed_by),
        "signed_by_keys": key_labels,
        "envelope": envelope.describe() if envelope is not None else None,
        "body": None,
        "latest": None,
    }

    if envelope is None:
        not_proven.append(
            "what the leaf means: it is not a Bucket entry envelope (a CBOR map), so its "
            "bytes are not interpreted; whatever it says, only its submitter vouches for it"
        )
    else:
        not_proven.append(
            "the entry's claims (fields of the leaf, listed below): product, artifact type, "
            "artifact id, version, previous version, integration time, principal and "
            "metadata are what the submitter and the log's server say; the signature makes "
            "them tamper-evident, not true"
        )
    if body is not None:
        if envelope is None:
            raise BadProofShape(
                f"cannot check --body {args.body}: the leaf is not an entry envelope "
                "naming body_sha256 and body_size"
            )
        envelope.check_body(*body)
        proven.append(
            f"the body file {args.body} ({body[1]} bytes, sha256 {body[0].hex()}) is the body "
            "the leaf commits to (body_sha256 and body_size match)"
        )
        result["body"] = {"file": args.body, "sha256": body[0].hex(), "size": body[1]}
    elif envelope is not None and envelope.body_sha256 is not None:
        not_proven.append(
            f"the artifact body: the leaf commits to sha256 {envelope.body_sha256.hex()} "
            f"({envelope.body_size} bytes), but no body was checked (pass --body FILE)"
        )

    if args.log is not None:
        checked = verify_receipt_in_log(
            receipt, keys, args.log, leaf=leaf, origin=args.origin, token=token,
            timeout=args.timeout,
        )  # fmt: skip
        latest = checked.latest
        proven.append(
            f"the log's latest checkpoint (size {latest.size}, root {_b64(latest.root)}, "
            f"signed by {', '.join(checked.latest_signed_by)}) still contains that tree: "
            f"consistency proof {verified.size} -> {latest.size} "
            f"({len(checked.proof)} hashes) verified"
        )
        result["latest"] = {
            "size": latest.size,
            "root": _b64(latest.root),
            "signed_by": list(checked.latest_signed_by),
            "proof": [_b64(h) for h in checked.proof],
        }
        not_proven.append(
            "that the log shows everyone this same tree (split views are caught by "
            "comparing checkpoints with others: witnesses, gossip, other auditors)"
        )
    else:
        not_proven.append(
            "that the log still holds this tree today and shows everyone the same one "
            "(pass --log URL to check against its latest checkpoint)"
        )
    result["proven"] = proven
    result["not_proven"] = not_proven
    return result


# --- consistency -------------------------------------------------------------------------


def _parse_proof_file(data: bytes, path: str) -> list[bytes]:
    """Return the hashes of a proof file: one canonical base64 32-byte hash per line."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise BadProofShape(f"proof file {path} is not ASCII base64 lines") from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    proof = []
    for number, line in enumerate(lines, 1):
        raw = _b64decode_canonical(line.rstrip("\r"))
        if raw is None or len(raw) != 32:
            raise BadProofShape(
                f"proof file {path} line {number} is not one canonical base64 32-byte hash: "
                f"{line[:60]!r}"
            )
        proof.append(raw)
    return proof


def _cmd_consistency(args: argparse.Namespace) -> dict[str, Any]:
    """Verify that checkpoint NEW extends checkpoint OLD; return the facts to print."""
    keys = _parse_keys(args.vkey)
    old_data = _read_input(args.old)
    new_data = _read_input(args.new)
    if args.proof is not None:
        proof = _parse_proof_file(_read_input(args.proof), args.proof)
        proof_from = args.proof
    else:
        # Open both first: never ask a log for anything on the strength of unverified text.
        old_cp, _ = open_checkpoint_note(old_data, keys, origin=args.origin)
        new_cp, _ = open_checkpoint_note(new_data, keys, origin=args.origin)
        proof, proof_from = [], "none needed"
        if 0 < old_cp.size < new_cp.size:
            if args.log is None:
                raise _UsageError(
                    f"a proof is needed from size {old_cp.size} to {new_cp.size}: "
                    "pass --proof FILE or --log URL"
                )
            source = open_source(args.log, token=_token(args), timeout=args.timeout)
            proof = fetch_consistency_proof(source, old_cp.size, new_cp.size)
            proof_from = source.location(f"proof/consistency?old={old_cp.size}&new={new_cp.size}")
    checked = verify_checkpoint_consistency(old_data, new_data, keys, proof, origin=args.origin)
    return {
        "kind": "consistency",
        "origin": checked.new.origin,
        "old_size": checked.old.size,
        "old_root": _b64(checked.old.root),
        "new_size": checked.new.size,
        "new_root": _b64(checked.new.root),
        "proof": [_b64(h) for h in checked.proof],
        "proof_from": proof_from,
        "signed_by": sorted(set(checked.old_signed_by) | set(checked.new_signed_by)),
    }


# --- log -----------------------------------------------------------------------------


class _ProgressBar:
    """A one-line progress bar on ``stream``, redrawn at most every ``interval`` s."""

    def __init__(self, stream: TextIO, interval: float = 0.2) -> None:
        self.stream = stream
        self.interval = interval
        self._last = 0.0
        self._width = 0

    def __call__(self, p: AuditProgress) -> None:
        now = time.monotonic()
        if now - self._last < self.interval and p.entries < p.total:
            return
        self._last = now
        fraction = p.entries / p.total if p.total else 1.0
        filled = int(fraction * 30)
        rate = p.entries / p.elapsed if p.elapsed > 0 else 0.0
        line = (
            f"[{'#' * filled}{'.' * (30 - filled)}] {100 * fraction:5.1f}% "
            f"{p.entries:,}/{p.total:,} entries {rate:,.0f} entries/s "
            f"{p.bytes_read / 1e6:,.1f} MB"
        )
        self.stream.write("\r" + line.ljust(self._width))
        self.stream.flush()
        self._width = len(line)

    def clear(self) -> None:
        """Erase the bar so the next line starts clean."""
        if self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0


def _cmd_log(args: argparse.Namespace) -> dict[str, Any]:
    """Audit a whole tlog-tiles log; return the facts to print."""
    keys = _parse_keys(args.vkey)
    bar = _ProgressBar(sys.stderr) if args.progress or sys.stderr.isatty() else None
    try:
        result = audit_log(
            args.source, keys, state=args.state, token=_token(args), progress=bar,
            origin=args.origin, timeout=args.timeout,
        )  # fmt: skip
    except OSError as err:  # only the state file is read or written directly
        raise _UsageError(f"state file {args.state}: {err.strerror or err}") from None
    finally:
        if bar is not None:
            bar.clear()
    cp = result.checkpoint
    previous = result.previous
    return {
        "kind": "log",
        "source": os.fspath(args.source),
        "origin": cp.origin,
        "size": cp.size,
        "root": _b64(cp.root),
        "signed_by": list(result.signed_by),
        "entries": result.entries,
        "bundles": result.bundles,
        "tiles": result.tiles,
        "fallbacks": result.fallbacks,
        "bytes_read": result.bytes_read,
        "elapsed_s": round(result.elapsed, 3),
        "previous": (
            {"size": previous.size, "root": _b64(previous.root)} if previous is not None else None
        ),
        "state_file": args.state,
    }


# --- output ---------------------------------------------------------------------------


def _rows_text(title: str, rows: list[tuple[str, object]]) -> list[str]:
    width = max(len(name) for name, _ in rows) + 2
    return [title] + [f"{name + ':':<{width}}{value}" for name, value in rows]


def _render_text(result: dict[str, Any]) -> str:
    """Return the human-readable report of a verified result."""
    kind = result["kind"]
    if kind == "consistency":
        return "\n".join(_render_consistency(result))
    if kind == "log":
        return "\n".join(_render_log(result))
    rows: list[tuple[str, object]] = [
        ("origin", result["origin"]),
        ("size", result["size"]),
        ("root", result["root"]),
    ]
    if kind == "receipt":
        rows += [
            ("index", result["index"]),
            ("leaf", f"{result['leaf_size']} bytes, sha256 {result['leaf_sha256']}"),
            ("leaf hash", result["leaf_hash"]),
        ]
    for ext in result.get("extensions", []):
        rows.append(("extension", ext))
    rows.append(("signed by", ", ".join(result["signed_by"])))
    lines = _rows_text(f"verified {kind}", rows)
    if kind == "receipt":
        lines += ["", "PROVEN (by the log's signature and the inclusion proof):"]
        lines += [f"  * {fact}" for fact in result["proven"]]
        lines += ["", "NOT PROVEN by this check (claims, or questions it cannot answer):"]
        lines += [f"  * {claim}" for claim in result["not_proven"]]
        if result["envelope"]:
            lines += ["", "claims in the entry (unverified):"]
            width = max(len(k) for k in result["envelope"]) + 2
            lines += [f"  {k + ':':<{width}}{v}" for k, v in result["envelope"].items()]
    return "\n".join(lines)


def _render_consistency(result: dict[str, Any]) -> list[str]:
    return _rows_text(
        "verified consistency",
        [
            ("origin", result["origin"]),
            ("old", f"size {result['old_size']}, root {result['old_root']}"),
            ("new", f"size {result['new_size']}, root {result['new_root']}"),
            ("proof", f"{len(result['proof'])} hashes ({result['proof_from']})"),
            ("signed by", ", ".join(result["signed_by"])),
        ],
    )


def _render_log(result: dict[str, Any]) -> list[str]:
    previous = result["previous"]
    if previous is not None:
        history = (
            f"extends the previously audited tree of size {previous['size']} "
            f"(root {previous['root']}): nothing rewritten, forked or removed"
        )
    elif result["state_file"] is not None:
        history = "first audit with this state file: nothing to compare with yet"
    else:
        history = "not checked (pass --state FILE to compare with the last audit)"
    elapsed = result["elapsed_s"]
    rate = f", {result['entries'] / elapsed:,.0f} entries/s" if elapsed > 0 else ""
    rows: list[tuple[str, object]] = [
        ("origin", result["origin"]),
        ("size", result["size"]),
        ("root", result["root"]),
        ("signed by", ", ".join(result["signed_by"])),
        (
            "verified",
            f"{result['entries']} leaves from {result['bundles']} entry bundles hashed "
            f"into {result['tiles']} hash tiles and the signed root",
        ),
        ("history", history),
        ("read", f"{result['bytes_read']:,} bytes in {elapsed:.3f} s{rate}"),
    ]
    if result["fallbacks"]:
        rows.append(("fallbacks", f"{result['fallbacks']} full tiles read for missing partials"))
    if result["state_file"] is not None:
        rows.append(("state", f"saved to {result['state_file']}"))
    return _rows_text("audited log", rows)


# --- the parser --------------------------------------------------------------------------


def _add_keys(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--vkey",
        action="append",
        required=True,
        metavar="VKEY",
        help="trusted verifier key name+keyid+base64key (repeat for several)",
    )
    sub.add_argument("--origin", help="fail unless the checkpoint names this log origin")
    sub.add_argument("--json", action="store_true", help="print a JSON object instead of text")


def _add_common(sub: argparse.ArgumentParser, what: str) -> None:
    sub.add_argument("file", metavar="FILE", help=f"the {what} to verify, or - for stdin")
    _add_keys(sub)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < 86_400:
        raise argparse.ArgumentTypeError(f"timeout must be between 0 and 86400 s, not {text}")
    return value


def _add_network(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--token",
        help=f"bearer token for the log (default: ${TOKEN_ENV}; prefer the variable)",
    )
    sub.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"give up on a fetch after this long (default {DEFAULT_TIMEOUT:g})",
    )


Command = Callable[[argparse.Namespace], dict[str, Any]]


def _build_parser() -> _Parser:
    """Return the argument parser; each subcommand sets ``run`` to its handler."""
    parser = _Parser(
        prog=PROG,
        description="Verify transparency log checkpoints, receipts, consistency and "
        "whole logs against pinned verifier keys.",
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
    receipt.add_argument(
        "--body",
        metavar="FILE",
        help="check this artifact body against the leaf's body_sha256 and body_size",
    )
    receipt.add_argument(
        "--log",
        metavar="URL",
        help="also check the receipt's tree is a prefix of this log's latest checkpoint",
    )
    _add_network(receipt)
    receipt.set_defaults(run=_cmd_receipt)

    consistency = subs.add_parser(
        "consistency", help="verify checkpoint NEW extends checkpoint OLD (RFC 9162)"
    )
    consistency.add_argument("old", metavar="OLD", help="the older signed checkpoint file")
    consistency.add_argument("new", metavar="NEW", help="the newer signed checkpoint file")
    _add_keys(consistency)
    source = consistency.add_mutually_exclusive_group()
    source.add_argument(
        "--proof", metavar="FILE", help="consistency proof: one base64 hash per line"
    )
    source.add_argument(
        "--log", metavar="URL", help="fetch the proof from this log's /proof/consistency"
    )
    _add_network(consistency)
    consistency.set_defaults(run=_cmd_consistency)

    log = subs.add_parser("log", help="audit a whole C2SP tlog-tiles log (URL or directory)")
    log.add_argument(
        "source", metavar="SOURCE", help="the log's http(s):// prefix, or a local directory"
    )
    _add_keys(log)
    log.add_argument(
        "--state",
        metavar="FILE",
        help="JSON file remembering the last verified checkpoint; demand consistency with it",
    )
    log.add_argument(
        "--progress", action="store_true", help="show a progress bar on stderr (default: if a TTY)"
    )
    _add_network(log)
    log.set_defaults(run=_cmd_log)
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
    exit status: 0 verified, 1 verification failed, 2 bad usage or an I/O problem."""
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
    except _EXIT_2_ERRORS as err:
        return _fail(str(err), EXIT_USAGE, as_json, type(err).__name__)
    except VerificationError as err:
        return _fail(str(err), EXIT_FAILED, as_json, type(err).__name__)
    except KeyboardInterrupt:
        return _fail("interrupted", 130, as_json, "interrupted")
    if args.json:
        print(json.dumps({"ok": True, **result}))
    else:
        print(_render_text(result))
    return EXIT_OK
