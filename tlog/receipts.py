"""The JSON answer of a submission: one receipt object per appended entry.

DESIGN.md ("HTTP API", submission): each object holds ``index``, ``tree_size``,
``leaf_hash``, ``leaf``, ``inclusion_proof`` (base64 hashes), ``checkpoint`` (the signed
note text), ``receipt`` (the C2SP tlog-proof text, ``extra`` = the leaf) and the
artifact's ``artifact_id`` and ``version``.

:func:`receipt_dict` says what an object holds, plainly; :func:`receipts_json` writes the
same objects as JSON text for a whole batch at once. A batch answer repeats the same
checkpoint and most proof hashes in every item (a hundred receipts are about 250 KB), so
the fast writer escapes the checkpoint once and writes the text of each distinct proof
suffix once. The tests check that both give equal JSON for every case.
"""

from __future__ import annotations

import binascii
import json
import re
from collections.abc import Sequence
from typing import Any

from tlog.log import Appended
from verifier.receipt import RECEIPT_HEADER, Receipt, format_receipt

__all__ = ["receipt_dict", "receipts_json"]

# Printable ASCII but '"' and '\\': a JSON string of these is the text between quotes.
_PLAIN_JSON = re.compile(r"[ !#-\[\]-~]*")


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
    but the checkpoint and the artifact id is base64 or ASCII digits, which JSON strings
    carry unescaped, so only the newlines are written as ``\\n`` and the checkpoint is
    escaped once. Neighbouring leaves' proofs end alike (RFC 6962 §2.1.1: the hashes
    above the point where their paths meet), so the text of each proof suffix is
    written once and shared.
    """
    notes: dict[str, str] = {}
    suffixes: dict[tuple[bytes, ...], tuple[str, str]] = {(): ("", "")}

    def proof_text(proof: tuple[bytes, ...]) -> tuple[str, str]:
        """Return (the receipt's proof lines, the JSON list's items) of a proof."""
        found = suffixes.get(proof)
        if found is None:
            lines, listed = proof_text(proof[1:])
            h = _b64(proof[0])
            found = suffixes[proof] = (f"\\n{h}{lines}", f'"{h}",{listed}' if listed else f'"{h}"')
        return found

    out = []
    for a in items:
        note = notes.get(a.checkpoint)
        if note is None:
            note = notes[a.checkpoint] = json.dumps(a.checkpoint)[1:-1]
        lines, listed = proof_text(tuple(a.proof))
        leaf = _b64(a.leaf)
        version = "null" if a.version is None else str(int(a.version))
        aid = a.artifact_id
        if aid is None:
            artifact_id = "null"
        elif _PLAIN_JSON.fullmatch(aid):
            artifact_id = f'"{aid}"'
        else:
            artifact_id = json.dumps(aid)
        out.append(
            f'{{"index":{int(a.index)},"tree_size":{int(a.size)},'
            f'"leaf_hash":"{_b64(a.leaf_hash)}","leaf":"{leaf}",'
            f'"inclusion_proof":[{listed}],"checkpoint":"{note}",'
            f'"receipt":"{RECEIPT_HEADER}\\nextra {leaf}\\nindex {int(a.index)}'
            f'{lines}\\n\\n{note}",'
            f'"artifact_id":{artifact_id},"version":{version}}}'
        )
    return out
