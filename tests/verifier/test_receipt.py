"""Tests for verifier.receipt: real receipts end to end, strict parsing, the cache.

Receipts are built from public data: the Sigstore Rekor v2 staging entry (leaf =
the canonicalized body, index 645, its proof and its signed checkpoint) and every
(index, size) pair of Tessera's test log, with paths from tests/reference.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import VECTORS
from tests.reference import inclusion_path, mth
from verifier.checkpoint import Checkpoint, sign_checkpoint
from verifier.errors import (
    BadProofShape,
    InvalidSignature,
    LeafMismatch,
    MalformedReceipt,
    OriginMismatch,
    RootMismatch,
    UnknownKey,
    VerificationError,
)
from verifier.hashing import leaf_hash
from verifier.note import Signer, VerifierKey, parse_vkey
from verifier.receipt import (
    MAX_PROOF_HASHES,
    RECEIPT_HEADER,
    CheckpointCache,
    Receipt,
    VerifiedReceipt,
    format_receipt,
    parse_receipt,
    verify_receipt,
)


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return data


SIGSTORE = _load("sigstore-rekor-v2-staging-entry.json")
SIGSTORE_ORIGIN = "log2025-alpha1.rekor.sigstage.dev"
SIGSTORE_KEY = parse_vkey(SIGSTORE["vkey"])
SIGSTORE_LEAF = base64.b64decode(SIGSTORE["canonicalized_body_b64"])
SIGSTORE_RECEIPT = Receipt(
    index=SIGSTORE["log_index"],
    proof=tuple(base64.b64decode(h) for h in SIGSTORE["inclusion_proof_b64"]),
    checkpoint=SIGSTORE["checkpoint"],
    extra=SIGSTORE_LEAF,
)
TESSERA = _load("tessera-testdata-log.json")
TESSERA_KEY = parse_vkey(TESSERA["vkey"])
TESSERA_LEAVES = [word.encode() for word in TESSERA["leaves_text"]]

SIGNER = Signer.from_seed("example.com/log", bytes(range(32)))


def _tessera_checkpoint(size: int) -> str:
    path: Path = VECTORS / TESSERA["dir"] / f"checkpoint.{size}"
    return path.read_text(encoding="utf-8")


def _receipt(leaves: list[bytes], index: int, signer: Signer = SIGNER) -> Receipt:
    """Return a receipt for ``leaves[index]`` under a checkpoint of all ``leaves``."""
    cp = sign_checkpoint(Checkpoint(signer.name, len(leaves), mth(leaves)), signer)
    path = tuple(inclusion_path(index, leaves))
    return Receipt(index=index, proof=path, checkpoint=cp, extra=leaves[index])


# --- real receipts -------------------------------------------------------------------


def test_sigstore_receipt_end_to_end() -> None:
    text = format_receipt(SIGSTORE_RECEIPT)
    assert text.startswith(f"{RECEIPT_HEADER}\nextra ")
    assert parse_receipt(text) == SIGSTORE_RECEIPT
    for data in (text, text.encode(), SIGSTORE_RECEIPT):
        verified = verify_receipt(data, [SIGSTORE_KEY], origin=SIGSTORE_ORIGIN)
        assert verified == VerifiedReceipt(
            origin=SIGSTORE_ORIGIN,
            size=646,
            root=base64.b64decode(SIGSTORE["root_hash_b64"]),
            index=645,
            leaf=SIGSTORE_LEAF,
            leaf_hash=leaf_hash(SIGSTORE_LEAF),
            signed_by=(SIGSTORE_ORIGIN,),
        )


def test_sigstore_receipt_leaf_argument() -> None:
    bare = Receipt(SIGSTORE_RECEIPT.index, SIGSTORE_RECEIPT.proof, SIGSTORE_RECEIPT.checkpoint)
    assert "extra" not in format_receipt(bare)
    with pytest.raises(MalformedReceipt, match="no 'extra' line"):
        verify_receipt(bare, [SIGSTORE_KEY])
    assert verify_receipt(bare, [SIGSTORE_KEY], leaf=SIGSTORE_LEAF).leaf == SIGSTORE_LEAF
    assert verify_receipt(SIGSTORE_RECEIPT, [SIGSTORE_KEY], leaf=SIGSTORE_LEAF).index == 645
    with pytest.raises(LeafMismatch) as info:
        verify_receipt(SIGSTORE_RECEIPT, [SIGSTORE_KEY], leaf=b"something else")
    assert (info.value.expected, info.value.got) == (b"something else", SIGSTORE_LEAF)
    with pytest.raises(RootMismatch):
        verify_receipt(bare, [SIGSTORE_KEY], leaf=SIGSTORE_LEAF + b" ")


def test_sigstore_receipt_wrong_origin_key_index() -> None:
    with pytest.raises(OriginMismatch):
        verify_receipt(SIGSTORE_RECEIPT, [SIGSTORE_KEY], origin="example.com/log")
    with pytest.raises(UnknownKey):
        verify_receipt(SIGSTORE_RECEIPT, [TESSERA_KEY])
    for index, error in ((644, RootMismatch), (646, BadProofShape), (0, BadProofShape)):
        moved = Receipt(index, SIGSTORE_RECEIPT.proof, SIGSTORE_RECEIPT.checkpoint, SIGSTORE_LEAF)
        with pytest.raises(error):
            verify_receipt(moved, [SIGSTORE_KEY])


def test_tessera_every_index_every_size() -> None:
    cache = CheckpointCache()
    count = 0
    for size in range(1, len(TESSERA_LEAVES) + 1):
        leaves = TESSERA_LEAVES[:size]
        checkpoint = _tessera_checkpoint(size)
        for index in range(size):
            receipt = Receipt(
                index, tuple(inclusion_path(index, leaves)), checkpoint, leaves[index]
            )
            text = format_receipt(receipt)
            for c in (None, cache):
                verified = verify_receipt(
                    text, [TESSERA_KEY], origin=TESSERA["origin_line"], cache=c
                )
                assert (verified.index, verified.size, verified.leaf) == (
                    index,
                    size,
                    leaves[index],
                )
            count += 1
    assert count == 15 * 16 // 2
    assert len(cache) == 15  # one entry per distinct checkpoint


# --- strict parsing ------------------------------------------------------------------

HASH = base64.b64encode(bytes(range(32))).decode()
CHECKPOINT = "example.com/log\n1\n" + HASH + "\n\n— example.com/log AAAAAAA=\n"
GOOD = f"{RECEIPT_HEADER}\nextra aGk=\nindex 5\n{HASH}\n{HASH}\n\n{CHECKPOINT}"


def test_good_text_parses() -> None:
    r = parse_receipt(GOOD)
    assert r == Receipt(5, (bytes(range(32)),) * 2, CHECKPOINT, b"hi")
    assert format_receipt(r) == GOOD
    assert parse_receipt(GOOD.replace("extra aGk=\n", "")).extra is None
    assert parse_receipt(GOOD.replace("extra aGk=", "extra ")).extra == b""
    assert parse_receipt(GOOD.replace(f"{HASH}\n{HASH}\n", "")).proof == ()


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param(GOOD.replace(RECEIPT_HEADER, "c2sp.org/tlog-proof@v2"), id="wrong-header"),
        pytest.param(GOOD.replace(RECEIPT_HEADER + "\n", ""), id="no-header"),
        pytest.param(GOOD.replace("index 5", "index 05"), id="index-leading-zero"),
        pytest.param(GOOD.replace("index 5", "index +5"), id="index-plus"),
        pytest.param(GOOD.replace("index 5", "index -5"), id="index-negative"),
        pytest.param(GOOD.replace("index 5", "index  5"), id="index-two-spaces"),
        pytest.param(GOOD.replace("index 5", "index 5 "), id="index-trailing-space"),
        pytest.param(GOOD.replace("index 5", "index"), id="index-no-value"),
        pytest.param(GOOD.replace("index 5", "Index 5"), id="index-capital"),
        pytest.param(GOOD.replace("index 5", f"index {2**64}"), id="index-2**64"),
        pytest.param(GOOD.replace("index 5", "index " + "9" * 5000), id="index-huge"),
        pytest.param(GOOD.replace("index 5\n", ""), id="no-index"),
        pytest.param(GOOD.replace("extra aGk=\nindex 5", "index 5\nextra aGk="), id="extra-after"),
        pytest.param(GOOD.replace("extra aGk=", "extra aGk"), id="extra-unpadded"),
        pytest.param(GOOD.replace("extra aGk=", "extra aGl="), id="extra-non-canonical"),
        pytest.param(GOOD.replace("extra aGk=", "extra  aGk="), id="extra-two-spaces"),
        pytest.param(GOOD.replace("extra aGk=", "extra"), id="extra-no-value"),
        pytest.param(GOOD.replace(f"{HASH}\n\n", f"{HASH[:-1]}\n\n"), id="hash-unpadded"),
        pytest.param(GOOD.replace(f"{HASH}\n\n", f"{HASH[:-2]}B=\n\n"), id="hash-non-canonical"),
        pytest.param(
            GOOD.replace(f"{HASH}\n\n", base64.b64encode(bytes(31)).decode() + "\n\n"),
            id="hash-31-bytes",
        ),
        pytest.param(
            GOOD.replace(f"{HASH}\n\n", base64.b64encode(bytes(33)).decode() + "\n\n"),
            id="hash-33-bytes",
        ),
        pytest.param(GOOD.replace(f"{HASH}\n\n", f"{HASH} \n\n"), id="hash-trailing-space"),
        pytest.param(GOOD.replace("\n\n", "\n"), id="no-blank-line"),
        pytest.param(GOOD.replace("\n\n", "\n\n\n", 1), id="two-blank-lines"),
        pytest.param(GOOD.split("\n\n")[0] + "\n\n", id="no-checkpoint"),
        pytest.param(GOOD[:-1], id="checkpoint-without-final-newline"),
        pytest.param(GOOD.replace("\n", "\r\n"), id="crlf"),
        pytest.param(
            GOOD.replace(f"{HASH}\n{HASH}\n", f"{HASH}\n" * (MAX_PROOF_HASHES + 1)),
            id="too-many-hashes",
        ),
    ],
)
def test_non_canonical_receipts_rejected(text: str) -> None:
    with pytest.raises(MalformedReceipt):
        parse_receipt(text)


def test_non_utf8_rejected() -> None:
    with pytest.raises(MalformedReceipt, match="UTF-8"):
        parse_receipt(GOOD.encode() + b"\xff")


def test_longest_proof_accepted() -> None:
    longest = f"{RECEIPT_HEADER}\nindex 1\n" + f"{HASH}\n" * MAX_PROOF_HASHES + f"\n{CHECKPOINT}"
    assert len(parse_receipt(longest).proof) == MAX_PROOF_HASHES


@pytest.mark.parametrize(
    "kwargs",
    [
        {"index": -1},
        {"index": 2**64},
        {"index": True},
        {"proof": (bytes(31),)},
        {"proof": (bytes(32),) * (MAX_PROOF_HASHES + 1)},
        {"checkpoint": ""},
        {"checkpoint": "x"},
        {"checkpoint": "\nx\n"},
        {"extra": "text"},
    ],
)
def test_receipt_fields_checked(kwargs: dict[str, Any]) -> None:
    fields: dict[str, Any] = {"index": 0, "proof": (), "checkpoint": "c\n"} | kwargs
    with pytest.raises(MalformedReceipt):
        Receipt(**fields)


receipts = st.builds(
    Receipt,
    index=st.integers(0, 2**64 - 1),
    proof=st.lists(st.binary(min_size=32, max_size=32), max_size=MAX_PROOF_HASHES).map(tuple),
    checkpoint=st.text(min_size=1, max_size=200)
    .filter(lambda s: not s.startswith("\n"))
    .map(lambda s: s + "\n"),
    extra=st.none() | st.binary(max_size=100),
)


@given(receipts)
def test_format_parse_round_trip(r: Receipt) -> None:
    assert parse_receipt(format_receipt(r)) == r


# --- tampering -----------------------------------------------------------------------

SMALL_LEAVES = [b"leaf %d" % i for i in range(6)]


def test_every_single_byte_change_fails() -> None:
    data = format_receipt(_receipt(SMALL_LEAVES, 3)).encode()
    verify_receipt(data, [SIGNER.verifier_key])
    for pos in range(len(data)):
        mutated = bytearray(data)
        mutated[pos] ^= 0x01
        with pytest.raises(VerificationError):
            verify_receipt(bytes(mutated), [SIGNER.verifier_key])


@given(
    leaves=st.lists(st.binary(min_size=1, max_size=20), min_size=1, max_size=9),
    data=st.data(),
)
def test_any_byte_change_fails(leaves: list[bytes], data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(leaves) - 1), label="index")
    text = format_receipt(_receipt(leaves, index)).encode()
    assert verify_receipt(text, [SIGNER.verifier_key]).index == index
    pos = data.draw(st.integers(0, len(text) - 1), label="pos")
    new = data.draw(st.integers(0, 255).filter(lambda b: b != text[pos]), label="byte")
    mutated = text[:pos] + bytes([new]) + text[pos + 1 :]
    with pytest.raises(VerificationError):
        verify_receipt(mutated, [SIGNER.verifier_key])


@given(st.binary(max_size=500))
def test_garbage_bytes_only_raise_verification_errors(data: bytes) -> None:
    with pytest.raises(VerificationError):
        verify_receipt(data, [SIGNER.verifier_key])


@given(
    extra=st.none() | st.binary(max_size=40),
    index=st.integers(-(10**40), 10**40),
    hashes=st.lists(st.binary(max_size=40), max_size=5),
    tail=st.text(max_size=200),
)
def test_structured_garbage_only_raises_verification_errors(
    extra: bytes | None, index: int, hashes: list[bytes], tail: str
) -> None:
    lines = [RECEIPT_HEADER]
    if extra is not None:
        lines.append("extra " + base64.b64encode(extra).decode())
    lines.append(f"index {index}")
    lines += [base64.b64encode(h).decode() for h in hashes]
    with pytest.raises(VerificationError):
        verify_receipt("\n".join(lines) + "\n\n" + tail, [SIGNER.verifier_key])


def test_thousand_lines_of_garbage() -> None:
    hashes = f"{HASH}\n" * 1000
    with pytest.raises(MalformedReceipt, match="1000 proof hashes"):
        parse_receipt(f"{RECEIPT_HEADER}\nindex 1\n{hashes}\n{CHECKPOINT}")
    sigs = "— example.com/log AAAAAAA=\n" * 1000
    with pytest.raises(VerificationError):
        verify_receipt(f"{RECEIPT_HEADER}\nextra aGk=\nindex 0\n\nx\n0\n{HASH}\n\n{sigs}", [])


# --- the cache -----------------------------------------------------------------------


def _count_verifies(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    real = VerifierKey.verify

    def counting(self: VerifierKey, message: bytes, signature: bytes) -> bool:
        calls[0] += 1
        return real(self, message, signature)

    monkeypatch.setattr(VerifierKey, "verify", counting)
    return calls


def test_cache_pays_for_ed25519_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_verifies(monkeypatch)
    cache = CheckpointCache()
    keys = [SIGNER.verifier_key]
    texts = [format_receipt(_receipt(SMALL_LEAVES, i)) for i in range(len(SMALL_LEAVES))]
    calls[0] = 0  # signing above does not verify, but be explicit
    for text in texts * 3:
        verify_receipt(text, keys, cache=cache)
    assert calls[0] == 1
    assert len(cache) == 1
    for text in texts:
        verify_receipt(text, keys)
    assert calls[0] == 1 + len(texts)


def test_cache_is_keyed_by_keys_and_origin() -> None:
    cache = CheckpointCache()
    text = format_receipt(_receipt(SMALL_LEAVES, 0))
    verify_receipt(text, [SIGNER.verifier_key], cache=cache, origin="example.com/log")
    with pytest.raises(UnknownKey):
        verify_receipt(text, [TESSERA_KEY], cache=cache)
    with pytest.raises(OriginMismatch):
        verify_receipt(text, [SIGNER.verifier_key], cache=cache, origin="example.com/other")
    assert len(cache) == 1  # failures are not cached
    cache.clear()
    assert len(cache) == 0


def test_cache_is_bounded_and_drops_least_recently_used(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = CheckpointCache(maxsize=2)
    keys = [SIGNER.verifier_key]
    a, b, c = (format_receipt(_receipt(SMALL_LEAVES[: n + 1], 0)) for n in range(3))
    for text in (a, b, a, c):  # c evicts b, the least recently used
        verify_receipt(text, keys, cache=cache)
    assert len(cache) == 2
    calls = _count_verifies(monkeypatch)
    verify_receipt(a, keys, cache=cache)
    verify_receipt(c, keys, cache=cache)
    assert calls[0] == 0
    verify_receipt(b, keys, cache=cache)
    assert calls[0] == 1
    with pytest.raises(ValueError):
        CheckpointCache(maxsize=0)


def test_cache_does_not_hide_a_bad_signature() -> None:
    cache = CheckpointCache()
    receipt = _receipt(SMALL_LEAVES, 2)
    verify_receipt(receipt, [SIGNER.verifier_key], cache=cache)
    forged_cp = receipt.checkpoint.replace("\n6\n", "\n7\n")
    forged = Receipt(receipt.index, receipt.proof, forged_cp, receipt.extra)
    with pytest.raises(InvalidSignature):
        verify_receipt(forged, [SIGNER.verifier_key], cache=cache)


def test_leaf_hash_and_digest_reported() -> None:
    verified = verify_receipt(SIGSTORE_RECEIPT, [SIGSTORE_KEY])
    assert verified.leaf_hash == hashlib.sha256(b"\x00" + SIGSTORE_LEAF).digest()
