"""The auditor: check a whole C2SP tlog-tiles log, and keep logs honest over time.

A receipt proves one entry is in one signed tree. An auditor checks the rest:

- :func:`audit_log` reads every entry bundle and every hash tile of a log (over
  HTTP(S) or from a local copy), recomputes every leaf hash from the bundles and
  compares it with the level-0 tiles, recomputes every higher tile from the tiles
  below it, recomputes the root and compares it with the signed checkpoint. With a
  remembered :class:`AuditState` it also demands that the log only grew since the
  last audit: no rewritten history, no fork, no shrinking.
- :func:`verify_checkpoint_consistency` checks that one signed checkpoint extends
  another (RFC 9162 §2.1.4.2), and :func:`verify_receipt_in_log` that a receipt's
  tree is still a prefix of the log's latest tree.

How the audit stays small (C2SP tlog-tiles; RFC 6962 §2.1)
    A tile of level ``L`` holds the roots of complete subtrees of ``256**L`` leaves,
    and a *full* tile of level ``L`` hashes (as a perfect tree of 256 hashes) to one
    hash of level ``L + 1``. The audit streams: for each level-0 tile in order it
    checks the tile against its bundle, then pushes the tile's root into a buffer for
    level 1; when a level's buffer holds 256 hashes it fetches that level's full tile,
    compares, and pushes the root one level up. Only one bundle, one tile and at most
    255 pending hashes per level are held at any time (under 70 KiB for any uint64
    tree, plus one bundle), whatever the log's size. At the end the pending hashes
    of every level are exactly the log's partial tiles, and together they are the
    *compact range* of the tree: the roots of its maximal complete subtrees, whose
    right-to-left fold is the RFC 6962 root::

        size 70,000 = 65,536 (tile/2/000.p/1) + 16 x 256 + 256 (tile/1/001.p/17)
                      + 64 + 32 + 16 (tile/0/273.p/112)
        root = H(a, H(b, H(c, H(d, H(e, f)))))  for those six subtree roots a..f

Consistency with the last audit
    Rather than asking the log for a consistency proof, the audit recomputes the root
    of the first ``old size`` leaves while it streams past them (the compact range at
    that point is the pending hashes plus a prefix of the current level-0 tile) and
    demands it equal the root the auditor verified last time. This is as strong as
    verifying an RFC 9162 consistency proof (both show the old tree is a prefix of
    the new one) and needs nothing the audit does not already read.

Worked example (the log is a directory; over HTTP pass its URL)::

    >>> from verifier import audit_log, parse_vkey              # doctest: +SKIP
    >>> key = parse_vkey(open("gurukul.vkey").read().strip())   # doctest: +SKIP
    >>> result = audit_log("https://bucket.example/logs/gurukul", [key],
    ...                    state="gurukul.audit.json")          # doctest: +SKIP
    >>> result.checkpoint.size, result.previous.size             # doctest: +SKIP
    (1042, 1000)

Every failure raises a :class:`~verifier.errors.VerificationError` subclass whose
message names the tile path and the leaf index involved.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from verifier.checkpoint import Checkpoint, open_checkpoint_note
from verifier.client import (
    DEFAULT_TIMEOUT,
    TileSource,
    fetch_checkpoint,
    fetch_consistency_proof,
    fetch_tile,
    open_source,
)
from verifier.errors import (
    InconsistentCheckpoints,
    MalformedBundle,
    MalformedState,
    MalformedTile,
    OriginMismatch,
    RootMismatch,
    TileMismatch,
    VerificationError,
)
from verifier.hashing import EMPTY_ROOT, HASH_SIZE
from verifier.note import VerifierKey, _b64decode_canonical, _b64encode
from verifier.proof import verify_consistency
from verifier.receipt import Receipt, VerifiedReceipt, parse_receipt, verify_receipt
from verifier.tiles import TILE_HEIGHT, TILE_WIDTH, TileID, decode_bundle, tile_width_at

__all__ = [
    "AuditProgress",
    "AuditResult",
    "AuditState",
    "ConsistentCheckpoints",
    "ReceiptInLog",
    "audit_log",
    "verify_checkpoint_consistency",
    "verify_receipt_in_log",
]

_FULL_TILE_BYTES = HASH_SIZE * TILE_WIDTH
_STATE_FORMAT = "bucket-audit-state@v1"
_sha256 = hashlib.sha256


# --- what an audit remembers and reports -----------------------------------------------


@dataclass(frozen=True)
class AuditState:
    """The last checkpoint an auditor verified: origin, size, root and the signed note.

    Persisted as JSON by :meth:`save` and read back by :meth:`load`, which checks the
    note's signature again, so a state file cannot silently drift from its note.
    """

    origin: str
    size: int
    root: bytes
    checkpoint: str

    def to_json(self) -> str:
        """Return the state as a JSON document (one object, keys sorted)."""
        doc = {
            "format": _STATE_FORMAT,
            "origin": self.origin,
            "size": self.size,
            "root": _b64encode(self.root),
            "checkpoint": self.checkpoint,
        }
        return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, keys: Sequence[VerifierKey]) -> AuditState:
        """Return the state in ``text`` once its checkpoint verifies with ``keys`` and
        agrees with its origin, size and root fields. Raises MalformedState."""
        try:
            doc = json.loads(text)
        except (UnicodeDecodeError, ValueError) as err:
            raise MalformedState(f"audit state is not JSON: {err}") from None
        if not isinstance(doc, dict) or doc.get("format") != _STATE_FORMAT:
            raise MalformedState(f"audit state is not a {_STATE_FORMAT!r} JSON object")
        note, origin, size, root64 = (doc.get(k) for k in ("checkpoint", "origin", "size", "root"))
        if not isinstance(note, str) or not isinstance(root64, str):
            raise MalformedState("audit state lacks its 'checkpoint' or 'root' text")
        try:
            cp, _ = open_checkpoint_note(note, keys)
        except VerificationError as err:
            raise MalformedState(
                f"audit state's checkpoint does not verify with the given keys: {err}"
            ) from None
        if (origin, size, _b64decode_canonical(root64)) != (cp.origin, cp.size, cp.root):
            raise MalformedState(
                "audit state's origin, size or root differ from its signed checkpoint"
            )
        return cls(cp.origin, cp.size, cp.root, note)

    @classmethod
    def load(cls, path: str | os.PathLike[str], keys: Sequence[VerifierKey]) -> AuditState | None:
        """Return the state saved at ``path``, or None if there is no such file.

        Raises MalformedState for a file that is not a valid state, OSError if it
        cannot be read.
        """
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            return None
        try:
            return cls.from_json(data, keys)
        except MalformedState as err:
            raise MalformedState(f"state file {os.fspath(path)}: {err}") from None

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the state to ``path`` atomically (temporary file, fsync, rename).

        Raises OSError if it cannot be written.
        """
        target = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or Path("."))
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self.to_json())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


@dataclass(frozen=True)
class AuditProgress:
    """How far an audit is: ``entries`` of ``total`` leaves verified, ``bytes_read``
    bytes fetched, ``elapsed`` seconds since it started."""

    entries: int
    total: int
    bytes_read: int
    elapsed: float


@dataclass(frozen=True)
class AuditResult:
    """What a clean audit proved about a log.

    ``checkpoint`` (signed by ``signed_by``, text ``note``) describes a tree whose
    every leaf was read from ``bundles`` entry bundles and hashed, whose ``tiles`` hash
    tiles all agree with those leaves, and whose root the checkpoint signs.
    ``previous`` is the state checked against (the tree it names is a prefix of this
    one), ``state`` the state to remember for the next audit. ``fallbacks`` counts
    partial tiles read from their full tile instead.
    """

    checkpoint: Checkpoint
    note: str
    signed_by: tuple[str, ...]
    entries: int
    tiles: int
    bundles: int
    bytes_read: int
    fallbacks: int
    elapsed: float
    previous: AuditState | None
    state: AuditState


ProgressCallback = Callable[[AuditProgress], None]


# --- the audit -------------------------------------------------------------------------


def audit_log(
    source: str | os.PathLike[str] | TileSource,
    keys: Sequence[VerifierKey],
    *,
    state: str | os.PathLike[str] | AuditState | None = None,
    token: str | None = None,
    progress: ProgressCallback | None = None,
    origin: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> AuditResult:
    """Return what a full audit of the tlog-tiles log at ``source`` proved.

    ``source`` is an ``http(s)://`` prefix, a directory laid out the same way, or a
    :class:`~verifier.client.TileSource`. ``token`` is sent as a bearer token, and
    every HTTP fetch must finish within ``timeout`` seconds.

    1. fetch ``checkpoint`` and open it with the trusted ``keys`` (and the expected
       ``origin`` if given; C2SP tlog-checkpoint);
    2. if a previous ``state`` is given (an :class:`AuditState`, or a JSON file that
       may not exist yet): same origin, not smaller, same root if the same size;
    3. stream every entry bundle and the tiles of every level (C2SP tlog-tiles),
       checking that the leaves hash to the level-0 tiles and each full tile hashes
       to its entry in the level above (TileMismatch, MalformedTile, MalformedBundle);
       on the way, the first ``state.size`` leaves must hash to the old root;
    4. compare the root of the tiles with the checkpoint's (RootMismatch);
    5. if ``state`` is a path, save the new state there (atomically).

    ``progress`` is called with an :class:`AuditProgress` after every level-0 tile.
    Raises OriginMismatch and InconsistentCheckpoints for a log that changed its
    story since ``state``; FetchFailed, ResourceNotFound, SourceUnavailable as the
    fetches do; MalformedState for an unusable state file; OSError if the state file
    cannot be read or written.
    """
    started = time.monotonic()
    src = (
        source
        if isinstance(source, TileSource)
        else open_source(source, token=token, timeout=timeout)
    )
    # 1. The checkpoint, verified before anything it says is used.
    raw = fetch_checkpoint(src)
    try:
        cp, note = open_checkpoint_note(raw, keys, origin=origin)
    except VerificationError as err:
        err.args = (f"checkpoint ({src.location('checkpoint')}): {err}",)
        raise
    note_text = raw.decode("utf-8")  # open_checkpoint_note checked it is UTF-8
    signed_by = tuple(key.label for key in note.verified_by)

    # 2. The previous state, if any.
    previous: AuditState | None
    if state is None or isinstance(state, AuditState):
        previous = state
    else:
        previous = AuditState.load(state, keys)
    if previous is not None:
        _check_against_state(previous, cp, note_text)

    # 3. and 4. Every tile, every leaf, the root.
    checker = _TreeChecker(src, cp.size, previous, note_text, progress, started)
    root = checker.run()
    if root != cp.root:
        raise RootMismatch(
            f"the tiles of the tree of size {cp.size} give root {_b64encode(root)}, "
            f"but the checkpoint signs {_b64encode(cp.root)}",
            expected=cp.root,
            computed=root,
        )

    new_state = AuditState(cp.origin, cp.size, cp.root, note_text)
    if state is not None and not isinstance(state, AuditState):
        new_state.save(state)
    return AuditResult(
        checkpoint=cp,
        note=note_text,
        signed_by=signed_by,
        entries=cp.size,
        tiles=checker.tiles,
        bundles=checker.bundles,
        bytes_read=len(raw) + checker.bytes_read,
        fallbacks=checker.fallbacks,
        elapsed=time.monotonic() - started,
        previous=previous,
        state=new_state,
    )


def _check_against_state(old: AuditState, cp: Checkpoint, note: str) -> None:
    """Raise unless checkpoint ``cp`` can extend the remembered ``old`` one.

    The prefix itself is checked while streaming (see :class:`_TreeChecker`).
    """
    if cp.origin != old.origin:
        raise OriginMismatch(
            f"checkpoint is for origin {cp.origin!r}, but the audit state is for {old.origin!r}",
            expected=old.origin,
            got=cp.origin,
        )
    if cp.size < old.size:
        raise InconsistentCheckpoints(
            f"the log shrank: its checkpoint has size {cp.size}, smaller than the size "
            f"{old.size} verified before (sizes went backwards)",
            old=old.checkpoint,
            new=note,
            old_size=old.size,
            new_size=cp.size,
        )
    if cp.size == old.size and cp.root != old.root:
        raise InconsistentCheckpoints(
            f"the log forked: its checkpoint of size {cp.size} has root {_b64encode(cp.root)}, "
            f"but the checkpoint of the same size verified before has {_b64encode(old.root)}",
            old=old.checkpoint,
            new=note,
            old_size=old.size,
            new_size=cp.size,
        )


class _TreeChecker:
    """Streams a tree of ``size`` leaves tile by tile and returns its root.

    ``_pending[level]`` holds the concatenated roots of the complete subtrees of
    ``256**level`` leaves that no full tile of that level has covered yet (fewer
    than 256 of them, except for the instant a full tile is checked), and
    ``_next_tile[level]`` the index of that level's next tile.
    """

    def __init__(
        self,
        source: TileSource,
        size: int,
        previous: AuditState | None,
        note: str,
        progress: ProgressCallback | None,
        started: float,
    ) -> None:
        self.source = source
        self.size = size
        self.previous = previous
        self.note = note
        self.progress = progress
        self.started = started
        self._pending: list[bytearray] = [bytearray()]
        self._next_tile: list[int] = [0]
        self.tiles = 0
        self.bundles = 0
        self.bytes_read = 0
        self.fallbacks = 0

    def run(self) -> bytes:
        """Return the root of the tree after checking every tile and bundle."""
        size = self.size
        if size == 0:
            return EMPTY_ROOT
        last = b""
        count = (size + TILE_WIDTH - 1) // TILE_WIDTH
        for index in range(count):
            width = min(TILE_WIDTH, size - index * TILE_WIDTH)
            hashes = self._check_level0(index, width)
            self._check_prefix(index * TILE_WIDTH, hashes, width)
            if width == TILE_WIDTH:
                self._push(1, _perfect_root(hashes))
            else:
                last = hashes
            if self.progress is not None:
                self.progress(
                    AuditProgress(
                        index * TILE_WIDTH + width,
                        size,
                        self.bytes_read,
                        time.monotonic() - self.started,
                    )
                )
        # The pending hashes of every level are now that level's partial tile.
        for level in range(1, len(self._pending)):
            pending = self._pending[level]
            if pending:
                self._check_upper(level, bytes(pending))
        parts = [bytes(p) for p in reversed(self._pending[1:])] + [last]
        return _compact_range_root(parts)

    # -- level 0: bundles against tiles ------------------------------------------------

    def _check_level0(self, index: int, width: int) -> bytes:
        """Return the ``width`` leaf hashes of level-0 tile ``index`` once the entry
        bundle and the tile agree (C2SP tlog-tiles: entry i hashes to hash i)."""
        bundle_id = TileID(0, index, width, entries=True)
        bundle = fetch_tile(self.source, bundle_id)
        self.bundles += 1
        self.bytes_read += len(bundle.data)
        self.fallbacks += bundle.full_fallback
        computed = _leaf_hashes(bundle.data, width, bundle.path, bundle.full_fallback)

        tile_id = TileID(0, index, width)
        served = self._fetch_hashes(tile_id)
        if served != computed:
            i = _first_difference(served, computed)
            leaf = index * TILE_WIDTH + i
            raise TileMismatch(
                f"{bundle.path}: entry {i} (leaf index {leaf}) hashes to "
                f"{_hex_at(computed, i)}, but {tile_id.path} holds {_hex_at(served, i)}",
                path=tile_id.path,
                position=i,
                index=leaf,
                expected=_hash_at(computed, i),
                got=_hash_at(served, i),
            )
        return computed

    # -- higher levels: each full tile hashes to one entry of the level above -----------

    def _push(self, level: int, node: bytes) -> None:
        """Add the root of a complete subtree of ``256**level`` leaves at ``level``;
        check the level's tile once it is full and carry its root upwards."""
        while True:
            if level == len(self._pending):
                self._pending.append(bytearray())
                self._next_tile.append(0)
            pending = self._pending[level]
            pending += node
            if len(pending) < _FULL_TILE_BYTES:
                return
            full = bytes(pending)
            pending.clear()
            self._check_upper(level, full)
            node = _perfect_root(full)
            level += 1

    def _check_upper(self, level: int, expected: bytes) -> None:
        """Check the next tile of ``level`` (level >= 1) holds ``expected``."""
        index = self._next_tile[level]
        width = len(expected) // HASH_SIZE
        if tile_width_at(level, index, self.size) != width:
            raise AssertionError(f"bad math: tile {level}/{index} of size {self.size}")
        tile_id = TileID(level, index, width)
        served = self._fetch_hashes(tile_id)
        if served != expected:
            i = _first_difference(served, expected)
            span = TILE_WIDTH**level
            first = (index * TILE_WIDTH + i) * span
            raise TileMismatch(
                f"{tile_id.path}: hash {i} (leaves {first}..{first + span - 1}) is "
                f"{_hex_at(served, i)}, but the tiles below give {_hex_at(expected, i)}",
                path=tile_id.path,
                position=i,
                index=first,
                expected=_hash_at(expected, i),
                got=_hash_at(served, i),
            )
        if width == TILE_WIDTH:
            self._next_tile[level] = index + 1

    def _fetch_hashes(self, tile_id: TileID) -> bytes:
        """Return the ``tile_id.width`` hashes of a hash tile, concatenated; a full tile
        fetched in place of a missing partial one is cut to the partial width."""
        fetched = fetch_tile(self.source, tile_id)
        self.tiles += 1
        self.bytes_read += len(fetched.data)
        self.fallbacks += fetched.full_fallback
        width = TILE_WIDTH if fetched.full_fallback else tile_id.width
        want = HASH_SIZE * width
        if len(fetched.data) != want:
            raise MalformedTile(
                f"{fetched.path}: {len(fetched.data)} bytes, want {want} "
                f"({width} hashes of {HASH_SIZE} bytes)"
            )
        return fetched.data[: HASH_SIZE * tile_id.width]

    # -- consistency with the previous audit ------------------------------------------

    def _check_prefix(self, start: int, hashes: bytes, width: int) -> None:
        """If the previous tree ends inside leaves ``start .. start+width``, check that
        the first ``previous.size`` leaves hash to the previous root."""
        old = self.previous
        # The empty tree is a prefix of every tree (RFC 9162 §2.1.4.2): nothing to do.
        if old is None or not start < old.size <= start + width:
            return
        # Compact range after old.size leaves: the pending roots of every level,
        # then the first old.size - start leaf hashes of this level-0 tile.
        parts = [bytes(p) for p in reversed(self._pending[1:])]
        parts.append(hashes[: HASH_SIZE * (old.size - start)])
        computed = _compact_range_root(parts)
        if computed != old.root:
            raise InconsistentCheckpoints(
                f"the log rewrote history: its first {old.size} leaves (up to leaf index "
                f"{old.size - 1}, in {TileID(0, start // TILE_WIDTH, width, True).path}) now "
                f"hash to {_b64encode(computed)}, but the checkpoint of size {old.size} "
                f"verified before has root {_b64encode(old.root)} (a fork)",
                old=old.checkpoint,
                new=self.note,
                old_size=old.size,
                new_size=self.size,
            )


# --- checkpoints and receipts against a log ----------------------------------------------


@dataclass(frozen=True)
class ConsistentCheckpoints:
    """Two verified checkpoints of one log, the ``new`` one an append-only extension
    of the ``old`` one by ``proof`` (RFC 9162 §2.1.4.2)."""

    old: Checkpoint
    new: Checkpoint
    old_signed_by: tuple[str, ...]
    new_signed_by: tuple[str, ...]
    proof: tuple[bytes, ...]


def verify_checkpoint_consistency(
    old: bytes | str,
    new: bytes | str,
    keys: Sequence[VerifierKey],
    proof: Sequence[bytes],
    *,
    origin: str | None = None,
) -> ConsistentCheckpoints:
    """Return both checkpoints once ``proof`` shows ``new`` extends ``old``.

    1. open both signed checkpoints with ``keys`` (and ``origin``, if given);
    2. they must name the same origin (OriginMismatch);
    3. the new size must not be smaller (InconsistentCheckpoints: sizes went
       backwards), and equal sizes need equal roots (InconsistentCheckpoints: fork);
    4. :func:`verifier.proof.verify_consistency` (BadProofShape, RootMismatch).
    """
    old_text, new_text = _note_text(old), _note_text(new)
    try:
        old_cp, old_note = open_checkpoint_note(old, keys, origin=origin)
    except VerificationError as err:
        err.args = (f"old checkpoint: {err}",)
        raise
    try:
        new_cp, new_note = open_checkpoint_note(new, keys, origin=origin)
    except VerificationError as err:
        err.args = (f"new checkpoint: {err}",)
        raise
    if new_cp.origin != old_cp.origin:
        raise OriginMismatch(
            f"the checkpoints are for different logs: old {old_cp.origin!r}, new {new_cp.origin!r}",
            expected=old_cp.origin,
            got=new_cp.origin,
        )
    _check_growth(old_cp, new_cp, old_text, new_text, "old checkpoint", "new checkpoint")
    try:
        verify_consistency(old_cp.size, new_cp.size, proof, old_cp.root, new_cp.root)
    except VerificationError as err:
        err.args = (f"new checkpoint does not extend the old one: {err}",)
        raise
    return ConsistentCheckpoints(
        old_cp,
        new_cp,
        tuple(k.label for k in old_note.verified_by),
        tuple(k.label for k in new_note.verified_by),
        tuple(proof),
    )


@dataclass(frozen=True)
class ReceiptInLog:
    """A verified receipt whose tree is still a prefix of the log's ``latest``
    checkpoint (signed by ``latest_signed_by``), by consistency ``proof``."""

    receipt: VerifiedReceipt
    latest: Checkpoint
    latest_signed_by: tuple[str, ...]
    proof: tuple[bytes, ...]


def verify_receipt_in_log(
    receipt: Receipt | bytes | str,
    keys: Sequence[VerifierKey],
    log: str | TileSource,
    *,
    leaf: bytes | None = None,
    origin: str | None = None,
    token: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> ReceiptInLog:
    """Return the verified receipt and the log's latest checkpoint that still holds it.

    1. :func:`verifier.receipt.verify_receipt` offline (its errors);
    2. fetch ``<log>/checkpoint`` and open it with ``keys`` for the receipt's origin;
    3. the latest tree must not be smaller (InconsistentCheckpoints), and if it is
       larger, ``<log>/proof/consistency?old=n&new=m`` must prove it extends the
       receipt's tree (RFC 9162 §2.1.4.2; BadProofShape, RootMismatch).

    ``log`` is an ``http(s)://`` log prefix or a :class:`~verifier.client.TileSource`.
    """
    parsed = receipt if isinstance(receipt, Receipt) else parse_receipt(receipt)
    verified = verify_receipt(parsed, keys, leaf=leaf, origin=origin)
    source = log if isinstance(log, TileSource) else open_source(log, token=token, timeout=timeout)
    raw = fetch_checkpoint(source)
    try:
        latest, note = open_checkpoint_note(raw, keys, origin=verified.origin)
    except VerificationError as err:
        err.args = (f"latest checkpoint ({source.location('checkpoint')}): {err}",)
        raise
    receipt_cp = Checkpoint(verified.origin, verified.size, verified.root)
    latest_text = raw.decode("utf-8")
    _check_growth(receipt_cp, latest, parsed.checkpoint, latest_text, "receipt's checkpoint", "log")
    proof: list[bytes] = []
    if 0 < verified.size < latest.size:
        proof = fetch_consistency_proof(source, verified.size, latest.size)
    try:
        verify_consistency(verified.size, latest.size, proof, verified.root, latest.root)
    except VerificationError as err:
        err.args = (
            f"the log's consistency proof from size {verified.size} to {latest.size} "
            f"does not verify: {err}",
        )
        raise
    return ReceiptInLog(verified, latest, tuple(k.label for k in note.verified_by), tuple(proof))


def _check_growth(
    old: Checkpoint, new: Checkpoint, old_text: str, new_text: str, old_name: str, new_name: str
) -> None:
    """Raise InconsistentCheckpoints if ``new`` is smaller than ``old``, or the same
    size with another root."""
    if new.size < old.size:
        raise InconsistentCheckpoints(
            f"sizes went backwards: the {new_name} has size {new.size}, smaller than the "
            f"{old_name}'s {old.size}; a log never shrinks",
            old=old_text,
            new=new_text,
            old_size=old.size,
            new_size=new.size,
        )
    if new.size == old.size and new.root != old.root:
        raise InconsistentCheckpoints(
            f"the log forked: the {old_name} and the {new_name} both have size {new.size} "
            f"but different roots ({_b64encode(old.root)} and {_b64encode(new.root)})",
            old=old_text,
            new=new_text,
            old_size=old.size,
            new_size=new.size,
        )


def _note_text(data: bytes | str) -> str:
    """Return a signed note as text for evidence (undecodable bytes replaced)."""
    return data if isinstance(data, str) else data.decode("utf-8", "replace")


# --- hashing helpers (RFC 6962 §2.1), tuned for whole tiles ---------------------------


def _leaf_hashes(data: bytes, width: int, path: str, full_fallback: bool) -> bytes:
    """Return the concatenated RFC 6962 leaf hashes of the first ``width`` entries of
    entry bundle ``data`` (uint16 big-endian length prefixes, C2SP tlog-tiles).

    The bundle must hold exactly ``width`` entries, or 256 if it is a full bundle
    fetched for a missing partial one. Raises MalformedBundle naming ``path``.
    """
    if full_fallback:
        try:
            decode_bundle(data, TILE_WIDTH)
        except MalformedBundle as err:
            raise MalformedBundle(f"{path}: {err}") from None
    sha256 = _sha256
    out: list[bytes] = []
    append = out.append
    end = len(data)
    pos = 0
    for i in range(width):
        start = pos + 2
        if start > end:
            raise MalformedBundle(
                f"{path}: truncated in the length of entry {i} (of {width}); {end - pos} bytes left"
            )
        stop = start + ((data[pos] << 8) | data[pos + 1])
        if stop > end:
            raise MalformedBundle(
                f"{path}: truncated: entry {i} (of {width}) claims {stop - start} bytes, "
                f"{end - start} remain"
            )
        append(sha256(b"\x00" + data[start:stop]).digest())
        pos = stop
    if pos != end and not full_fallback:
        raise MalformedBundle(f"{path}: {end - pos} bytes after its {width} entries")
    return b"".join(out)


def _perfect_root(hashes: bytes) -> bytes:
    """Return the root of the perfect tree over ``hashes`` (2**k concatenated hashes):
    pairwise RFC 6962 node hashes, level by level."""
    sha256 = _sha256
    while len(hashes) > HASH_SIZE:
        hashes = b"".join(
            [
                sha256(b"\x01" + hashes[i : i + 2 * HASH_SIZE]).digest()
                for i in range(0, len(hashes), 2 * HASH_SIZE)
            ]
        )
    return hashes


def _compact_range_root(parts: Sequence[bytes]) -> bytes:
    """Return the RFC 6962 root of a tree given its right frontier.

    ``parts`` lists, from the highest level down, the concatenated roots of each
    level's complete subtrees still pending (fewer than 256 per level). Each part
    splits into perfect subtrees by the bits of its count, largest first; the
    tree's root folds all those subtree roots from the right:
    ``MTH(D[n]) = H(MTH(D[0:k]), MTH(D[k:n]))`` (RFC 6962 §2.1).
    """
    nodes: list[bytes] = []
    for part in parts:
        count = len(part) // HASH_SIZE
        pos = 0
        for bit in range(TILE_HEIGHT, -1, -1):
            if count >> bit & 1:
                end = pos + (HASH_SIZE << bit)
                nodes.append(_perfect_root(part[pos:end]))
                pos = end
    if not nodes:
        return EMPTY_ROOT
    root = nodes[-1]
    for node in reversed(nodes[:-1]):
        root = _sha256(b"\x01" + node + root).digest()
    return root


def _first_difference(a: bytes, b: bytes) -> int:
    """Return the index of the first 32-byte hash where ``a`` and ``b`` differ."""
    for i in range(0, max(len(a), len(b)), HASH_SIZE):
        if a[i : i + HASH_SIZE] != b[i : i + HASH_SIZE]:
            return i // HASH_SIZE
    raise AssertionError("bad math: no difference between differing tiles")


def _hash_at(hashes: bytes, i: int) -> bytes:
    return hashes[HASH_SIZE * i : HASH_SIZE * (i + 1)]


def _hex_at(hashes: bytes, i: int) -> str:
    return binascii.hexlify(_hash_at(hashes, i)).decode("ascii")
