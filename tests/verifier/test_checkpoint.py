"""Tests for verifier.checkpoint: real checkpoints (Tessera, Sigstore, Go), strictness.

Tessera's test log (tessera-testdata-log/) holds the checkpoint it signed at every
size 0..15; the roots are checked against the RFC 6962 reference in tests/reference.py
over the transcribed leaves. The Sigstore Rekor v2 checkpoint is a production
signature; Go's tlog.FormatTree output pins the text layout.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import VECTORS
from tests.reference import mth
from verifier.checkpoint import (
    Checkpoint,
    format_checkpoint,
    open_checkpoint,
    open_checkpoint_note,
    parse_checkpoint,
    sign_checkpoint,
)
from verifier.errors import (
    MalformedCheckpoint,
    MalformedNote,
    OriginMismatch,
    UnknownKey,
    VerificationError,
)
from verifier.hashing import EMPTY_ROOT, leaf_hash
from verifier.note import Signer, VerifierKey, parse_note, parse_vkey, sign_note


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return data


TESSERA = _load("tessera-testdata-log.json")
TESSERA_DIR = VECTORS / TESSERA["dir"]
TESSERA_KEY = parse_vkey(TESSERA["vkey"])
SIGSTORE = _load("sigstore-rekor-v2-staging-entry.json")
C2SP = _load("c2sp-spec-examples.json")
GO = _load("go-sumdb-note.json")

ROOT_B64 = "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="
GOOD = f"example.com/behind-the-sofa\n20852163\n{ROOT_B64}\n"
SIGNER = Signer.from_seed("example.com/log", bytes(range(32)))

origins = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40
).filter(lambda s: s == s.strip())
extension_lines = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30
)
checkpoints = st.builds(
    Checkpoint,
    origin=origins,
    size=st.integers(0, 2**64 - 1),
    root=st.binary(min_size=32, max_size=32),
    extensions=st.lists(extension_lines, max_size=3).map(tuple),
)


# --- real checkpoints ----------------------------------------------------------------


@pytest.mark.parametrize("size", range(16))
def test_tessera_checkpoints_verify(size: int) -> None:
    data = (TESSERA_DIR / f"checkpoint.{size}").read_bytes()
    cp = open_checkpoint(data, [TESSERA_KEY], origin=TESSERA["origin_line"])
    leaves = [word.encode() for word in TESSERA["leaves_text"][:size]]
    assert cp == Checkpoint(TESSERA["origin_line"], size, mth(leaves))
    assert format_checkpoint(cp) == parse_note(data).text  # Tessera's text is canonical


def test_tessera_latest_checkpoint_and_empty_root() -> None:
    latest = (TESSERA_DIR / "checkpoint").read_bytes()
    assert latest == (TESSERA_DIR / "checkpoint.15").read_bytes()
    empty = open_checkpoint((TESSERA_DIR / "checkpoint.0").read_bytes(), [TESSERA_KEY])
    assert empty.root == EMPTY_ROOT
    assert base64.b64encode(empty.root).decode() == "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="


def test_sigstore_rekor_checkpoint_verifies() -> None:
    raw_key = base64.b64decode(SIGSTORE["public_key_raw_ed25519_b64"])
    origin = "log2025-alpha1.rekor.sigstage.dev"
    derived = VerifierKey.from_public_key(origin, raw_key)
    assert derived == parse_vkey(SIGSTORE["vkey"])
    # Rekor's log ID is the full hash whose first four bytes are the C2SP key ID.
    assert base64.b64decode(SIGSTORE["log_id_b64"])[:4] == derived.key_id
    cp, note = open_checkpoint_note(SIGSTORE["checkpoint"], [derived], origin=origin)
    assert cp.size == SIGSTORE["tree_size"]
    assert cp.root == base64.b64decode(SIGSTORE["root_hash_b64"])
    assert [k.name for k in note.verified_by] == [origin]


def test_c2sp_checkpoint_examples_parse() -> None:
    example = C2SP["checkpoint_example"]
    for name in ("checkpoint_example", "cosigned_checkpoint_example"):
        cp = parse_checkpoint(parse_note(C2SP[name]["note"]).text)
        assert cp.origin == example["want_origin"] == "example.com/behind-the-sofa"
        assert cp.size == example["want_size"] == 20852163
        assert cp.root == base64.b64decode(example["want_root_b64"])
        assert cp.extensions == ()


def test_go_tree_note_format() -> None:
    tree = GO["tree_note"]
    cp = parse_checkpoint(tree["text"])
    assert cp == Checkpoint("go.sum database tree", tree["size"], leaf_hash(b"hello world"))
    assert format_checkpoint(cp) == tree["text"]


# --- signing and opening -------------------------------------------------------------


def test_sign_and_open_with_origin() -> None:
    cp = Checkpoint("example.com/log", 7, leaf_hash(b"x"), ("ext one", "two"))
    signed = sign_checkpoint(cp, SIGNER)
    assert signed.startswith(format_checkpoint(cp) + "\n— example.com/log ")
    assert open_checkpoint(signed, [SIGNER.verifier_key], origin="example.com/log") == cp
    with pytest.raises(OriginMismatch) as info:
        open_checkpoint(signed, [SIGNER.verifier_key], origin="example.com/other")
    assert (info.value.expected, info.value.got) == ("example.com/other", "example.com/log")
    with pytest.raises(UnknownKey):
        open_checkpoint(signed, [TESSERA_KEY])


def test_signed_garbage_is_malformed_checkpoint() -> None:
    # Verified text that is not a checkpoint: the signature is fine, the parse is not.
    for text in ("hello\n", "a\n01\nroot\n", "a\n1\n" + ROOT_B64 + "\n\n"):
        signed = sign_note(text, [SIGNER])
        with pytest.raises((MalformedCheckpoint, MalformedNote)):
            open_checkpoint(signed, [SIGNER.verifier_key])


# --- strict parsing ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(GOOD[:-1], id="missing-final-newline"),
        pytest.param(GOOD.replace("20852163", "020852163"), id="leading-zero"),
        pytest.param(GOOD.replace("20852163", "00"), id="double-zero"),
        pytest.param(GOOD.replace("20852163", "+20852163"), id="plus-sign"),
        pytest.param(GOOD.replace("20852163", "-1"), id="negative"),
        pytest.param(GOOD.replace("20852163", " 20852163"), id="leading-space-size"),
        pytest.param(GOOD.replace("20852163", "20852163 "), id="trailing-space-size"),
        pytest.param(GOOD.replace("20852163", "20_852_163"), id="underscores"),
        pytest.param(GOOD.replace("20852163", "٢٠"), id="non-ascii-digits"),
        pytest.param(GOOD.replace("20852163", "0x10"), id="hex-size"),
        pytest.param(GOOD.replace("20852163", ""), id="empty-size"),
        pytest.param(GOOD.replace("20852163", str(2**64)), id="size-2**64"),
        pytest.param(GOOD.replace("20852163", "9" * 5000), id="huge-size"),
        pytest.param(GOOD.replace(ROOT_B64, ROOT_B64[:-1]), id="root-unpadded"),
        pytest.param(GOOD.replace(ROOT_B64, ROOT_B64 + "="), id="root-extra-padding"),
        pytest.param(GOOD.replace(ROOT_B64, ROOT_B64[:-2] + "J="), id="root-non-canonical"),
        pytest.param(
            GOOD.replace(ROOT_B64, base64.b64encode(bytes(31)).decode()), id="root-31-bytes"
        ),
        pytest.param(
            GOOD.replace(ROOT_B64, base64.b64encode(bytes(33)).decode()), id="root-33-bytes"
        ),
        pytest.param(GOOD.replace(ROOT_B64, ROOT_B64 + " "), id="root-trailing-space"),
        pytest.param(
            GOOD.replace(ROOT_B64, ROOT_B64.replace("+", "-").replace("/", "_")), id="root-urlsafe"
        ),
        pytest.param(GOOD.replace(ROOT_B64, ""), id="root-empty"),
        pytest.param(GOOD + "\n", id="empty-extension-line"),
        pytest.param(GOOD + "ext\n\n", id="empty-extension-after-one"),
        pytest.param(GOOD.replace("sofa\n", "sofa \n"), id="origin-trailing-space"),
        pytest.param(" " + GOOD, id="origin-leading-space"),
        pytest.param("\n" + GOOD.split("\n", 1)[1], id="origin-empty"),
        pytest.param(GOOD.replace("\n", "\r\n"), id="crlf"),
        pytest.param("example.com/x\n5\n", id="two-lines"),
        pytest.param("", id="empty"),
        pytest.param("\n", id="newline-only"),
        pytest.param(GOOD.replace("sofa", "so\x00fa"), id="origin-nul"),
        pytest.param(GOOD + "ext\tension\n", id="extension-tab"),
    ],
)
def test_non_canonical_text_rejected(text: str) -> None:
    with pytest.raises(MalformedCheckpoint):
        parse_checkpoint(text)


def test_size_bounds() -> None:
    top = GOOD.replace("20852163", str(2**64 - 1))
    assert parse_checkpoint(top).size == 2**64 - 1
    assert parse_checkpoint(GOOD.replace("20852163", "0")).size == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"origin": ""},
        {"origin": " x"},
        {"origin": "a\nb"},
        {"size": -1},
        {"size": 2**64},
        {"size": True},
        {"root": bytes(31)},
        {"root": "a" * 32},
        {"extensions": ("",)},
        {"extensions": ("a\nb",)},
    ],
)
def test_checkpoint_fields_checked(kwargs: dict[str, Any]) -> None:
    fields: dict[str, Any] = {"origin": "o", "size": 1, "root": bytes(32)} | kwargs
    with pytest.raises(MalformedCheckpoint):
        Checkpoint(**fields)


@given(checkpoints)
def test_format_parse_round_trip(cp: Checkpoint) -> None:
    text = format_checkpoint(cp)
    assert text.endswith("\n")
    assert parse_checkpoint(text) == cp


@given(checkpoints, st.data())
def test_parse_is_canonical(cp: Checkpoint, data: st.DataObject) -> None:
    # Mutate one character of a valid text: either it is refused, or it parses to a
    # checkpoint whose canonical text is exactly the mutated text.
    text = format_checkpoint(cp)
    pos = data.draw(st.integers(0, len(text) - 1))
    repl = data.draw(st.sampled_from(["", "0", "+", " ", "\n", "=", "A", "x", "\t", "9"]))
    mutated = text[:pos] + repl + text[pos + 1 :]
    try:
        parsed = parse_checkpoint(mutated)
    except MalformedCheckpoint:
        return
    assert format_checkpoint(parsed) == mutated


@given(cp=checkpoints, data=st.data())
def test_any_byte_change_of_signed_checkpoint_fails(cp: Checkpoint, data: st.DataObject) -> None:
    signed = sign_checkpoint(cp, SIGNER).encode("utf-8")
    pos = data.draw(st.integers(0, len(signed) - 1))
    new = data.draw(st.integers(0, 255).filter(lambda b: b != signed[pos]))
    mutated = signed[:pos] + bytes([new]) + signed[pos + 1 :]
    with pytest.raises(VerificationError):
        open_checkpoint(mutated, [SIGNER.verifier_key], origin=cp.origin)


@given(st.text(max_size=300))
def test_garbage_only_raises_malformed_checkpoint(text: str) -> None:
    try:
        parse_checkpoint(text)
    except MalformedCheckpoint:
        pass


@given(
    st.lists(
        st.one_of(
            st.text(max_size=30),
            st.integers(-(10**30), 10**30).map(str),
            st.binary(min_size=0, max_size=40).map(lambda b: base64.b64encode(b).decode()),
        ),
        min_size=0,
        max_size=6,
    )
)
def test_near_checkpoints_only_raise_malformed_checkpoint(lines: list[str]) -> None:
    try:
        cp = parse_checkpoint("\n".join(lines) + "\n")
    except MalformedCheckpoint:
        return
    assert format_checkpoint(cp) == "\n".join(lines) + "\n"


@given(st.binary(max_size=300))
def test_open_garbage_only_raises_verification_errors(data: bytes) -> None:
    with pytest.raises(VerificationError):
        open_checkpoint(data, [SIGNER.verifier_key])
