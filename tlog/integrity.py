"""Integrity checks: re-hash stored leaves and tile records against the signed checkpoints.

Everything a proof is built from is stored: leaves, and tile records holding every
complete subtree hash (see ``tlog.tree``). If any stored byte changed behind the
service's back (disk fault, tampering), some check here fails:

1. each leaf's RFC 6962 hash equals the level-0 hash stored for its index;
2. each interior node stored in a tile record equals the hash of its two children
   (rows 1..7 of a record, and row 0 of a tile at level L+1 from the tiles at L);
3. the root recomputed from the stored nodes equals the root of the latest signed
   checkpoint, whose signature verifies with the log's key; every stored checkpoint
   (``fsck`` only) verifies likewise at its own size.

``check_log`` checks a range of level-0 tiles (all of them for ``tlog fsck``);
:class:`IntegrityWatch` checks, every period, the newest tiles plus a rolling window
of old ones, so a flipped byte anywhere is found within a bounded number of periods
and a flipped byte in recent data within one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from tlog import storage as st
from tlog.log import Log
from tlog.storage import TxnHashReader
from tlog.tree import RECORD_SIZE, ROW_OFFSETS, TILE_HEIGHT, TILE_WIDTH, ProofBuilder
from verifier.checkpoint import open_checkpoint
from verifier.errors import VerificationError

__all__ = ["IntegrityReport", "IntegrityWatch", "check_log"]

_H = 32


@dataclass
class IntegrityReport:
    """What a check covered and the first mismatches it found."""

    log: str
    size: int
    leaves_checked: int = 0
    nodes_checked: int = 0
    checkpoints_checked: int = 0
    problems: list[str] = field(default_factory=list)
    first_bad_index: int | None = None

    @property
    def ok(self) -> bool:
        """Return True if nothing mismatched."""
        return not self.problems

    def fail(self, message: str, index: int | None = None) -> None:
        """Record a mismatch (keeping the first 20 messages)."""
        if len(self.problems) < 20:
            self.problems.append(message)
        if index is not None and self.first_bad_index is None:
            self.first_bad_index = index

    def summary(self) -> str:
        """Return one line: OK with counts, or the first problem."""
        counts = (
            f"size {self.size}, {self.leaves_checked} leaves, {self.nodes_checked} nodes, "
            f"{self.checkpoints_checked} checkpoints"
        )
        if self.ok:
            return f"OK ({counts})"
        return f"MISMATCH: {self.problems[0]} ({counts}; {len(self.problems)} problem(s))"


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _check_tile(
    txn: st.Txn, log: Log, level: int, index: int, size: int, r: IntegrityReport
) -> None:
    """Check one tile record: row 0 against its sources, rows 1..7 against row 0."""
    span = 1 << (TILE_HEIGHT * (level + 1))
    width = min(TILE_WIDTH, (size >> (TILE_HEIGHT * level)) - index * TILE_WIDTH)
    if width <= 0:
        return
    record = st.get_tile_record(txn, log.dbs, level, index)
    first_leaf = index * span
    if record is None or len(record) != RECORD_SIZE:
        r.fail(f"tile record {level}/{index} is missing or truncated", first_leaf)
        return
    if level == 0:
        seen = 0
        try:
            for i, leaf in enumerate(st.iter_leaves(txn, log.dbs, first_leaf, first_leaf + width)):
                seen += 1
                r.leaves_checked += 1
                if _sha(b"\x00" + leaf) != record[i * _H : (i + 1) * _H]:
                    r.fail(
                        f"leaf {first_leaf + i} does not hash to its stored hash", first_leaf + i
                    )
        except st.StorageError as exc:  # the leaf after the last one seen is gone
            r.fail(str(exc), first_leaf + seen)
    else:
        for j in range(width):
            child = st.get_tile_record(txn, log.dbs, level - 1, index * TILE_WIDTH + j)
            r.nodes_checked += 1
            top = ROW_OFFSETS[TILE_HEIGHT - 1]
            if (
                child is None
                or _sha(b"\x01" + child[top : top + 2 * _H]) != record[j * _H : (j + 1) * _H]
            ):
                r.fail(f"tile {level}/{index} hash {j} does not match tile {level - 1}", first_leaf)
    for row in range(1, TILE_HEIGHT):
        below, here = ROW_OFFSETS[row - 1], ROW_OFFSETS[row]
        for j in range(width >> row):
            r.nodes_checked += 1
            pair = record[below + 2 * j * _H : below + (2 * j + 2) * _H]
            if _sha(b"\x01" + pair) != record[here + j * _H : here + (j + 1) * _H]:
                r.fail(
                    f"tile {level}/{index} row {row} node {j} does not match its children",
                    first_leaf + (j << row),
                )


def check_log(
    log: Log, *, tiles: range | None = None, all_checkpoints: bool = True
) -> IntegrityReport:
    """Re-hash a log (or the level-0 tiles in ``tiles``) against its signed checkpoints.

    Returns the report; never raises for a mismatch (that is the report's job).
    """
    with log.store.storage.read() as txn:
        latest = st.latest_checkpoint(txn, log.dbs)
        size = 0 if latest is None else latest[0]
        report = IntegrityReport(log.name, size)
        if size == 0:
            return report
        keys = [log.signer.verifier_key]
        level0 = range((size + TILE_WIDTH - 1) // TILE_WIDTH)
        chosen = (
            level0 if tiles is None else range(max(tiles.start, 0), min(tiles.stop, level0.stop))
        )
        for index in chosen:
            _check_tile(txn, log, 0, index, size, report)
        # Higher levels: every tile whose subtree overlaps the chosen level-0 tiles.
        level = 1
        lo, hi = chosen.start, chosen.stop
        while size >> (TILE_HEIGHT * level):
            lo, hi = lo // TILE_WIDTH, (hi + TILE_WIDTH - 1) // TILE_WIDTH
            for index in range(lo, hi):
                _check_tile(txn, log, level, index, size, report)
            level += 1
        builder = ProofBuilder(TxnHashReader(txn, log.dbs))
        sizes = [size]
        if all_checkpoints:
            cursor = txn.cursor(log.dbs.checkpoints)
            sizes = [int.from_bytes(bytes(k), "big") for k in cursor.iternext(values=False)]
        for checked_size in sizes:
            note = st.get_checkpoint(txn, log.dbs, checked_size)
            report.checkpoints_checked += 1
            try:
                cp = open_checkpoint(note, keys, origin=log.origin)
            except VerificationError as exc:
                report.fail(f"checkpoint {checked_size} does not verify: {exc}")
                continue
            if cp.size != checked_size or builder.root(checked_size) != cp.root:
                report.fail(
                    f"the stored tree does not match the signed root at size {checked_size}"
                )
    return report


class IntegrityWatch:
    """Rolling integrity checks for a running service (see the module docstring)."""

    def __init__(self, recent_tiles: int = 2, rolling_tiles: int = 8) -> None:
        self.recent_tiles = recent_tiles
        self.rolling_tiles = rolling_tiles
        self._cursor: dict[str, int] = {}

    def check(self, log: Log) -> IntegrityReport:
        """Check the newest tiles and the next window of old ones; return the report."""
        size = log.size
        tiles = (size + TILE_WIDTH - 1) // TILE_WIDTH
        recent = check_log(
            log, tiles=range(max(0, tiles - self.recent_tiles), tiles), all_checkpoints=False
        )
        if not recent.ok or tiles == 0:
            return recent
        start = self._cursor.get(log.name, 0) % tiles
        rolling = check_log(
            log, tiles=range(start, start + self.rolling_tiles), all_checkpoints=False
        )
        self._cursor[log.name] = start + self.rolling_tiles
        return rolling if not rolling.ok else recent
