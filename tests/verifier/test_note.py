"""Tests for verifier.note: Go sumdb/note vectors, the C2SP examples, keys, properties.

Known answers come from ../shared/vectors (see its README.md): go-sumdb-note.json
transcribes golang.org/x/mod/sumdb/note's tests, c2sp-spec-examples.json the
examples of the C2SP specs. Go's error text in a vector says which of our error
classes must come out (and our message starts with Go's text).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tests.conftest import VECTORS
from verifier.errors import (
    InvalidSignature,
    MalformedKey,
    MalformedNote,
    TooManySignatures,
    UnknownKey,
    VerificationError,
)
from verifier.note import (
    MAX_SIGNATURES,
    SIG_TYPE_ED25519,
    NoteSignature,
    Signer,
    VerifierKey,
    format_signer_key,
    format_vkey,
    key_id,
    open_note,
    parse_note,
    parse_signer_key,
    parse_vkey,
    sign_note,
)


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return data


GO = _load("go-sumdb-note.json")
C2SP = _load("c2sp-spec-examples.json")
PETER_VKEY: str = GO["keys"]["PeterNeumann"]["vkey"]
PETER_SKEY: str = GO["keys"]["PeterNeumann"]["skey"]
ENOCH_VKEY: str = GO["keys"]["EnochRoot"]["vkey"]
PETER_NOTE: str = GO["sign"]["want_note"]

# Go's error text -> the error class we must raise for it.
GO_ERRORS: dict[str, type[VerificationError]] = {
    "note has no verifiable signatures": UnknownKey,
    "invalid signature for key": InvalidSignature,
    "malformed note": MalformedNote,
}

# Key names: no Unicode spaces, no '+', no control characters (C2SP signed-note §Format).
names = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), blacklist_characters="+"
    ),
    min_size=1,
    max_size=40,
).filter(lambda s: not any(ch.isspace() for ch in s))
note_texts = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")) | st.just("\n"), max_size=200
).map(lambda s: s + "\n")


def _expected_error(go_error: str) -> type[VerificationError]:
    for prefix, cls in GO_ERRORS.items():
        if go_error.startswith(prefix):
            return cls
    raise AssertionError(f"no mapping for Go error {go_error!r}")


# --- keys ------------------------------------------------------------------------------


def test_vectors_keys_round_trip() -> None:
    for name in ("PeterNeumann", "EnochRoot"):
        vkey = GO["keys"][name]["vkey"]
        key = parse_vkey(vkey)
        assert key.name == name
        assert key.sig_type == SIG_TYPE_ED25519
        assert key.key_id.hex() == vkey.split("+")[1]
        assert key.key_id == key_id(name, SIG_TYPE_ED25519, key.public_key)
        assert format_vkey(key) == vkey
    signer = parse_signer_key(PETER_SKEY)
    assert signer.vkey == PETER_VKEY
    assert signer.verifier_key == parse_vkey(PETER_VKEY)
    assert format_signer_key(signer) == PETER_SKEY


def test_c2sp_example_key_id() -> None:
    example = C2SP["signed_note_example"]
    key = parse_vkey(example["vkey"])
    assert key.key_id.hex() == example["want_key_id"]
    assert key.key_id == key_id(key.name, 0x01, key.public_key)


def _vkey(name: str, hex_id: str, payload: bytes) -> str:
    return f"{name}+{hex_id}+{base64.b64encode(payload).decode()}"


def _good_parts() -> tuple[str, bytes]:
    key = parse_vkey(PETER_VKEY)
    return key.key_id.hex(), bytes([1]) + key.public_key


@pytest.mark.parametrize(
    "vkey",
    [
        pytest.param("", id="empty"),
        pytest.param("PeterNeumann", id="name-only"),
        pytest.param("PeterNeumann+c74f20a3", id="no-key"),
        pytest.param(PETER_VKEY.replace("PeterNeumann", ""), id="empty-name"),
        pytest.param(PETER_VKEY.replace("c74f20a3", "C74F20A3"), id="uppercase-hex"),
        pytest.param(PETER_VKEY.replace("c74f20a3", "c74f20a"), id="short-hex"),
        pytest.param(PETER_VKEY.replace("c74f20a3", "c74f20a3a"), id="long-hex"),
        pytest.param(PETER_VKEY.replace("c74f20a3", "c74f20g3"), id="non-hex"),
        pytest.param(PETER_VKEY.replace("c74f20a3", "c74f20a4"), id="wrong-key-id"),
        pytest.param(PETER_VKEY[:-1], id="truncated-base64"),
        pytest.param(PETER_VKEY + "=", id="extra-padding"),
        pytest.param(PETER_VKEY.replace("ARpc", "AR pc"), id="space-in-base64"),
        pytest.param(PETER_VKEY.replace("y10TW", "y10TX"), id="non-canonical-base64"),
        pytest.param(PETER_VKEY + "\n", id="trailing-newline"),
    ],
)
def test_parse_vkey_rejects(vkey: str) -> None:
    with pytest.raises(MalformedKey):
        parse_vkey(vkey)


def test_parse_vkey_rejects_bad_names_types_and_lengths() -> None:
    _, payload = _good_parts()
    pub = payload[1:]
    for name in ("Peter Neumann", "Peter\tNeumann", "Peter\u00a0Neumann", "Peter\u3000N", "x\x01"):
        ident = key_id(name, 1, pub).hex()
        with pytest.raises(MalformedKey, match="whitespace or a control"):
            parse_vkey(_vkey(name, ident, payload))
    # A '+' in a name cannot survive the split: the rest is not a hex key ID.
    with pytest.raises(MalformedKey):
        parse_vkey(_vkey("a+b", key_id("a+b", 1, pub).hex(), payload))
    # Unknown signature types are refused even with the right key ID.
    for sig_type in (0x02, 0x04, 0xFF):
        ident = key_id("PeterNeumann", sig_type, pub).hex()
        with pytest.raises(MalformedKey, match="unsupported signature type"):
            parse_vkey(_vkey("PeterNeumann", ident, bytes([sig_type]) + pub))
    for short in (pub[:31], pub + b"\x00", b""):
        ident = key_id("PeterNeumann", 1, short).hex()
        with pytest.raises(MalformedKey):
            parse_vkey(_vkey("PeterNeumann", ident, bytes([1]) + short))


@pytest.mark.parametrize(
    "skey",
    [
        pytest.param(PETER_SKEY.replace("PRIVATE+KEY+", ""), id="no-prefix"),
        pytest.param(PETER_SKEY.replace("PRIVATE+KEY", "PUBLIC+KEY"), id="wrong-prefix"),
        pytest.param(PETER_SKEY.replace("c74f20a3", "c74f20a4"), id="wrong-key-id"),
        pytest.param(PETER_SKEY.replace("PeterNeumann", "Peter Neumann"), id="space-in-name"),
        pytest.param(PETER_SKEY.replace("+AYEK", "+AoEK"), id="wrong-type"),
        pytest.param(PETER_SKEY[:-4], id="short-seed"),
        pytest.param(PETER_SKEY.rsplit("+", 1)[0], id="no-key"),
    ],
)
def test_parse_signer_key_rejects(skey: str) -> None:
    with pytest.raises(MalformedKey) as info:
        parse_signer_key(skey)
    seed64 = PETER_SKEY.split("+", 4)[4]
    assert seed64[4:] not in str(info.value), "error messages must not leak the seed"


def test_signer_hides_seed() -> None:
    signer = parse_signer_key(PETER_SKEY)
    seed = signer.seed
    assert len(seed) == 32
    shown = repr(signer) + str(signer)
    for encoding in (seed.hex(), base64.b64encode(seed).decode(), repr(seed)):
        assert encoding not in shown
    assert "PeterNeumann" in shown and "c74f20a3" in shown


def test_signer_generate_and_from_seed() -> None:
    signer = Signer.generate("example.com/log")
    again = Signer.from_seed("example.com/log", signer.seed)
    assert again.public_key == signer.public_key
    assert again.key_id == signer.key_id == key_id("example.com/log", 1, signer.public_key)
    assert parse_signer_key(format_signer_key(signer)).vkey == signer.vkey
    message = b"hello"
    assert len(signer.sign(message)) == 64
    assert signer.verifier_key.verify(message, signer.sign(message))
    assert not signer.verifier_key.verify(message + b"!", signer.sign(message))
    assert not signer.verifier_key.verify(message, signer.sign(message)[:63])
    for bad_seed in (b"", bytes(31), bytes(33)):
        with pytest.raises(MalformedKey):
            Signer.from_seed("example.com/log", bad_seed)
    for bad_name in ("", "a b", "a+b", "a\nb"):
        with pytest.raises(MalformedKey):
            Signer.generate(bad_name)


def test_verifier_key_checks_its_fields() -> None:
    key = parse_vkey(PETER_VKEY)
    with pytest.raises(MalformedKey, match="does not match"):
        VerifierKey(key.name, b"\x00\x00\x00\x00", 1, key.public_key)
    with pytest.raises(MalformedKey, match="unsupported"):
        VerifierKey(key.name, key.key_id, 2, key.public_key)
    assert VerifierKey.from_public_key(key.name, key.public_key) == key
    assert "public_key" in repr(key) and "_nacl_key" not in repr(key)


@given(name=names, public_key=st.binary(min_size=32, max_size=32))
def test_vkey_round_trip(name: str, public_key: bytes) -> None:
    key = VerifierKey.from_public_key(name, public_key)
    vkey = format_vkey(key)
    assert parse_vkey(vkey) == key
    assert format_vkey(parse_vkey(vkey)) == vkey


# --- Go vectors ----------------------------------------------------------------------


def test_go_sign_byte_for_byte() -> None:
    sign = GO["sign"]
    signer = parse_signer_key(sign["skey"])
    assert signer.vkey == sign["vkey"]
    assert sign_note(sign["text"], [signer]) == sign["want_note"]


@pytest.mark.parametrize("case", GO["verify"], ids=[c["id"] for c in GO["verify"]])
def test_go_verify_vectors(case: dict[str, Any]) -> None:
    keys = [parse_vkey(k) for k in case["keys"]]
    if case["want_ok"]:
        for data in (case["note"], case["note"].encode("utf-8")):
            opened = open_note(data, keys)
            assert [k.name for k in opened.verified_by] == case["want_verified"]
            assert opened.text == GO["sign"]["text"]
            signers = [s.name for s in opened.signatures]
            for name in case.get("want_unverified", []):
                assert name in signers
                assert name not in [k.name for k in opened.verified_by]
        return
    want = _expected_error(case["want_error"])
    with pytest.raises(want) as info:
        open_note(case["note"], keys)
    assert case["want_error"] in str(info.value)
    if case["id"] == "101-signatures":
        assert info.type is TooManySignatures


def test_go_not_representable_0xff() -> None:
    # note_test.go: a note starting with byte 0xff is malformed (see vectors README).
    assert "0xff" in GO["not_representable"]
    data = b"\xff" + PETER_NOTE.encode("utf-8")
    with pytest.raises(MalformedNote, match="malformed note"):
        open_note(data, [parse_vkey(PETER_VKEY)])
    with pytest.raises(MalformedNote):
        parse_note(data)


def test_go_malformed_vectors_fail_structurally() -> None:
    # The malformed cases fail in parse_note already, before any key is consulted.
    for case in GO["verify"]:
        if case.get("want_error") == "malformed note":
            with pytest.raises(MalformedNote):
                parse_note(case["note"])


def test_exactly_max_signatures_accepted() -> None:
    line = PETER_NOTE.split("\n\n", 1)[1]
    at_limit = GO["sign"]["text"] + "\n" + line * MAX_SIGNATURES
    opened = open_note(at_limit, [parse_vkey(PETER_VKEY)])
    assert len(opened.signatures) == MAX_SIGNATURES
    assert [k.name for k in opened.verified_by] == ["PeterNeumann"]
    with pytest.raises(TooManySignatures):
        parse_note(at_limit + line)


# --- C2SP examples -------------------------------------------------------------------


def test_c2sp_signed_note_example_verifies() -> None:
    example = C2SP["signed_note_example"]
    opened = open_note(example["note"], [parse_vkey(example["vkey"])])
    assert opened.text == example["want_text"]
    assert [k.name for k in opened.verified_by] == ["example.com/foo"]


def test_c2sp_parse_only_notes() -> None:
    intro = C2SP["signed_note_intro_example"]
    note = parse_note(intro["note"])
    assert note.text == intro["want_text"]  # the text's own blank line stays in the text
    assert [s.name for s in note.signatures] == intro["want_signers"]
    for name in ("checkpoint_example", "cosigned_checkpoint_example"):
        example = C2SP[name]
        note = parse_note(example["note"])
        assert note.text.startswith("example.com/behind-the-sofa\n20852163\n")
        if "want_signers" in example:
            assert [s.name for s in note.signatures] == example["want_signers"]
    cosig = parse_note(C2SP["cosigned_checkpoint_example"]["note"]).signatures[1]
    assert len(cosig.signature) == 8 + 64  # tlog-cosignature: timestamp || Ed25519 sig
    # Nobody trusted signed them: unknown keys are ignored, then the note is refused.
    with pytest.raises(UnknownKey):
        open_note(intro["note"], [parse_vkey(PETER_VKEY)])


# --- open_note semantics -------------------------------------------------------------


def test_unknown_signatures_ignored_even_with_shared_name_or_id() -> None:
    peter = parse_signer_key(PETER_SKEY)
    impostor = Signer.generate("PeterNeumann")  # same name, different key ID
    text = "hello\n"
    note = sign_note(text, [impostor, peter])
    opened = open_note(note, [peter.verifier_key])
    assert opened.verified_by == (peter.verifier_key,)
    assert [s.name for s in opened.signatures] == ["PeterNeumann", "PeterNeumann"]
    with pytest.raises(UnknownKey, match="PeterNeumann\\+c74f20a3"):
        open_note(sign_note(text, [impostor]), [peter.verifier_key])


def test_known_key_bad_signature_rejects_whole_note() -> None:
    peter = parse_signer_key(PETER_SKEY)
    other = Signer.generate("other.example")
    good = sign_note("hello\n", [peter, other]).encode()
    forged_line = sign_note("bye\n", [other]).split("\n\n")[1]
    forged = good.decode().split("— other.example")[0] + forged_line
    with pytest.raises(InvalidSignature, match=r"other\.example"):
        open_note(forged, [peter.verifier_key, other.verifier_key])
    assert open_note(forged, [peter.verifier_key]).text == "hello\n"


def test_ambiguous_trusted_keys_refused() -> None:
    key = parse_vkey(PETER_VKEY)
    twin = VerifierKey.__new__(VerifierKey)
    for field, value in (("name", key.name), ("key_id", key.key_id), ("sig_type", 1)):
        object.__setattr__(twin, field, value)
    object.__setattr__(twin, "public_key", bytes(32))
    with pytest.raises(MalformedKey, match="refusing to guess"):
        open_note(PETER_NOTE, [key, twin])
    assert open_note(PETER_NOTE, [key, key]).verified_by == (key,)


def test_sign_note_rejects_bad_text() -> None:
    signer = parse_signer_key(PETER_SKEY)
    for text in ("no newline", "tab\there\n", "cr\r\n", "\ud800\n"):
        with pytest.raises(MalformedNote):
            sign_note(text, [signer])
    with pytest.raises(MalformedNote):
        sign_note("hello\n", [])


def test_signature_line_parsing() -> None:
    sig = parse_note(PETER_NOTE).signatures[0]
    assert sig == NoteSignature("PeterNeumann", bytes.fromhex("c74f20a3"), sig.signature)
    assert len(sig.signature) == 64 and sig.label == "PeterNeumann+c74f20a3"
    text = "t\n\n"
    for line in (
        "- PeterNeumann AAAAAAA=",  # hyphen, not em dash
        "—PeterNeumann AAAAAAA=",  # no space after the dash
        "— PeterNeumann",  # no signature
        "— PeterNeumann ",  # empty signature
        "— PeterNeumann AAAA",  # 3 bytes: no room for a key ID and a signature
        "— PeterNeumann AAAAAA==",  # 4 bytes: key ID only
        "— PeterNeumann AAAAAAB=",  # non-canonical base64 (padding bits set)
        "— PeterNeumann AAAAAAA= ",  # trailing space
        "— Peter+Neumann AAAAAAA=",
        "— PeterNeumann\u00a0x AAAAAAA=",
    ):
        with pytest.raises(MalformedNote):
            parse_note(text + line + "\n")
    assert parse_note(text + "— PeterNeumann AAAAAAA=\n").signatures[0].signature == b"\x00"


# --- properties ----------------------------------------------------------------------

SIGNER = Signer.from_seed("example.com/prop", bytes(range(32)))


@given(text=note_texts)
def test_sign_then_open(text: str) -> None:
    opened = open_note(sign_note(text, [SIGNER]), [SIGNER.verifier_key])
    assert opened.text == text


def test_every_single_byte_change_of_go_note_fails() -> None:
    data = PETER_NOTE.encode("utf-8")
    keys = [parse_vkey(PETER_VKEY)]
    for pos in range(len(data)):
        for flip in (0x01, 0x80):
            mutated = bytearray(data)
            mutated[pos] ^= flip
            with pytest.raises(VerificationError):
                open_note(bytes(mutated), keys)


@given(text=note_texts, data=st.data())
def test_any_byte_change_fails(text: str, data: st.DataObject) -> None:
    signed = sign_note(text, [SIGNER]).encode("utf-8")
    pos = data.draw(st.integers(0, len(signed) - 1), label="pos")
    new = data.draw(st.integers(0, 255), label="byte")
    assume(new != signed[pos])
    mutated = signed[:pos] + bytes([new]) + signed[pos + 1 :]
    with pytest.raises(VerificationError):
        open_note(mutated, [SIGNER.verifier_key])


@given(st.binary(max_size=400))
def test_garbage_bytes_only_raise_verification_errors(data: bytes) -> None:
    with pytest.raises(VerificationError):
        open_note(data, [SIGNER.verifier_key])


@given(st.text(max_size=400))
def test_garbage_text_only_raises_verification_errors(data: str) -> None:
    try:
        parse_note(data)
    except VerificationError:
        pass
    with pytest.raises(VerificationError):
        open_note(data, [SIGNER.verifier_key])


@given(
    body=note_texts,
    lines=st.lists(
        st.tuples(names, st.binary(min_size=0, max_size=80)).map(
            lambda t: f"— {t[0]} {base64.b64encode(t[1]).decode()}\n"
        ),
        min_size=1,
        max_size=5,
    ),
)
def test_structured_garbage_only_raises_verification_errors(body: str, lines: list[str]) -> None:
    with pytest.raises(VerificationError):
        open_note(body + "\n" + "".join(lines), [SIGNER.verifier_key])


@given(st.text(max_size=60))
def test_parse_vkey_only_raises_malformed_key(vkey: str) -> None:
    try:
        parse_vkey(vkey)
    except MalformedKey:
        pass


def test_thousand_signature_lines() -> None:
    line = PETER_NOTE.split("\n\n", 1)[1]
    note = GO["sign"]["text"] + "\n" + line * 1000
    with pytest.raises(TooManySignatures, match="1000 signature lines"):
        open_note(note, [parse_vkey(PETER_VKEY)])
    junk = "x\n\n" + "— a AAAAAAA=\n" * 1000
    with pytest.raises(TooManySignatures):
        parse_note(junk.encode())


def test_vectors_folder_is_there() -> None:
    assert isinstance(VECTORS, Path) and (VECTORS / "go-sumdb-note.json").is_file()
