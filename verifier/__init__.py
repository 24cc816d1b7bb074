"""Offline verification and auditing for Bucket transparency logs (stdlib + PyNaCl only).

Nobody has to trust the server: with a log's verifier key (vkey), pinned out of
band, anyone can check a receipt, a checkpoint, the consistency of two
checkpoints, or a whole log.

>>> from verifier import audit_log, parse_vkey, verify_receipt  # doctest: +SKIP
>>> key = parse_vkey(open("gurukul.vkey").read().strip())  # doctest: +SKIP
>>> proven = verify_receipt(open("entry.tlog-proof").read(), [key])  # doctest: +SKIP
>>> proven.origin, proven.size, proven.index             # doctest: +SKIP
('bucket.example/logs/gurukul', 1042, 17)
>>> result = audit_log("https://bucket.example/logs/gurukul", [key],
...                    state="gurukul.audit.json")       # doctest: +SKIP
>>> result.entries, result.previous.size                 # doctest: +SKIP
(1042, 1000)

See ``docs/auditing.md`` for what each check proves and does not prove.
"""

from verifier.audit import AuditResult, AuditState, audit_log
from verifier.checkpoint import Checkpoint, open_checkpoint, parse_checkpoint
from verifier.errors import VerificationError
from verifier.hashing import leaf_hash, node_hash
from verifier.note import Signer, VerifierKey, open_note, parse_vkey
from verifier.proof import verify_consistency, verify_inclusion
from verifier.receipt import Receipt, VerifiedReceipt, parse_receipt, verify_receipt

__all__ = [
    "AuditResult",
    "AuditState",
    "Checkpoint",
    "Receipt",
    "Signer",
    "VerificationError",
    "VerifiedReceipt",
    "VerifierKey",
    "audit_log",
    "leaf_hash",
    "node_hash",
    "open_checkpoint",
    "open_note",
    "parse_checkpoint",
    "parse_receipt",
    "parse_vkey",
    "verify_consistency",
    "verify_inclusion",
    "verify_receipt",
]
