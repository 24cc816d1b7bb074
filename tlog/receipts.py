"""The JSON answer of a submission: one receipt object per appended entry.

DESIGN.md ("HTTP API", submission): each object holds ``index``, ``tree_size``,
``leaf_hash``, ``leaf``, ``inclusion_proof`` (base64 hashes), ``checkpoint`` (the signed
note text), ``receipt`` (the C2SP tlog-proof text, ``extra`` = the leaf) and the
artifact's ``artifact_id`` and ``version``.

:func:`receipt_dict` says what an object holds, plainly; :func:`receipts_json` writes the
same objects as JSON text for a whole batch at once. A batch answer repeats the same
checkpoint and most proof hashes in every item (a hundred receipts are about 250 KB), so
the fast writer escapes the checkpoint once and base64-encodes each distinct hash once.
The tests check that both give equal JSON for every case.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Sequence
from typing import Any

from tlog.log import Appended
from verifier.receipt import RECEIPT_HEADER, Receipt, format_receipt

__all__ = ["receipt_dict", "receipts_json"]


def _b64(raw: bytes) -> str:
    """Return standard padded base64 (RFC 4648 §4) of raw."""
    return binascii.b2a_base64(raw, newline=False).decode("ascii")


def receipt_dict(a: Appended) -> dict[str, Any]:
    """Return the receipt object of one appended entry as a dict (the reference form)."""
    return {
        "index": a.index,
        "tree_size": a.size,
        "leaf_hash": _b64(a.leaf_hash),
        "leaf": _b64(a.leaf),
        "inclusion_proof": [_b64(h) for h in a.proof],
        "checkpoint": a.checkpoint,
        "receipt": format_receipt(
            Receipt(index=a.index, proof=a.proof, checkpoint=a.checkpoint, extra=a.leaf)
        ),
        "artifact_id": a.artifact_id,
        "version": a.version,
    }


def receipts_json(items: Sequence[Appended]) -> list[str]:
    """Return the JSON text of each item's receipt object, equal as JSON to receipt_dict.

    The receipt text is C2SP tlog-proof (§Format): the header line, ``extra <leaf>``,
    ``index <n>``, one line per proof hash, a blank line and the checkpoint. Every part
    but the checkpoint is base64 or ASCII digits, which JSON strings carry unescaped, so
    only the newlines are written as ``\\n`` and the checkpoint is escaped once.
    """
    hashes: dict[bytes, str] = {}
    notes: dict[str, str] = {}
    out = []
    for a in items:
        note = notes.get(a.checkpoint)
        if note is None:
            note = notes[a.checkpoint] = json.dumps(a.checkpoint)[1:-1]
        proof = []
        for h in a.proof:
            text = hashes.get(h)
            if text is None:
                text = hashes[h] = _b64(h)
            proof.append(text)
        leaf = _b64(a.leaf)
        lines = "".join([f"\\n{p}" for p in proof])
        listed = ",".join([f'"{p}"' for p in proof])
        version = "null" if a.version is None else str(int(a.version))
        out.append(
            f'{{"index":{int(a.index)},"tree_size":{int(a.size)},'
            f'"leaf_hash":"{_b64(a.leaf_hash)}","leaf":"{leaf}",'
            f'"inclusion_proof":[{listed}],"checkpoint":"{note}",'
            f'"receipt":"{RECEIPT_HEADER}\\nextra {leaf}\\nindex {int(a.index)}'
            f'{lines}\\n\\n{note}",'
            f'"artifact_id":{json.dumps(a.artifact_id)},"version":{version}}}'
        )
    return out
