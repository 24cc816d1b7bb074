"""Helpers shared by the engine tests (not a test module): reference tiles and bundles,
and a store whose log signs with a key we choose.

Reference tiles follow C2SP tlog-tiles from the RFC 6962 definition alone: hash tile
``tile/<L>/<N>`` position ``i`` is MTH of the leaves
``[(N*256 + i) * 256**L, (N*256 + i + 1) * 256**L)``; entry bundle ``N`` is the
uint16-length-prefixed leaves ``[N*256, N*256 + W)``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from tests.reference import mth_of_hashes
from tlog.log import RAW, Store
from verifier.note import Signer, format_signer_key

TILE_WIDTH = 256


def ref_tile(hashes: Sequence[bytes], level: int, index: int, width: int) -> bytes:
    """Return the reference bytes of hash tile level/index of the given width."""
    span = TILE_WIDTH**level
    out = []
    for i in range(width):
        lo = (index * TILE_WIDTH + i) * span
        out.append(mth_of_hashes(hashes[lo : lo + span]))
    return b"".join(out)


def ref_bundle(leaves: Sequence[bytes], index: int, width: int) -> bytes:
    """Return the reference bytes of entry bundle ``index`` of the given width."""
    first = index * TILE_WIDTH
    return b"".join(len(leaf).to_bytes(2, "big") + leaf for leaf in leaves[first : first + width])


def open_with_signer(data_dir: Path, name: str, signer: Signer, *, kind: str = RAW) -> Store:
    """Return a store in data_dir holding a new, empty log ``name`` that signs with ``signer``.

    ``Store.create_log`` always generates a fresh key and refuses an existing key file, so
    this writes the log record and a 0600 key file (Go signer format) itself, then opens
    the store the way a restart would.
    """
    store = Store.open(data_dir)
    try:
        store.storage.create_log(name, {"origin": signer.name, "vkey": signer.vkey, "kind": kind})
    finally:
        store.close()
    keys = data_dir / "keys"
    keys.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(keys / f"{name}.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(format_signer_key(signer) + "\n")
    return Store.open(data_dir)


def note_body(note: str) -> str:
    """Return the signed text of a note (everything before the blank line)."""
    body, sep, _ = note.partition("\n\n")
    assert sep, f"not a signed note: {note!r}"
    return body + "\n"
