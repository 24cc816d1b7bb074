"""C2SP signed notes: keys, Ed25519 signatures, and opening a note against trusted keys.

A signed note (c2sp.org/signed-note@v1.0.0, also Go's ``golang.org/x/mod/sumdb/note``)
is UTF-8 text that ends in a newline, then a blank line, then one or more signature
lines ``— <key name> <base64(4-byte key ID || signature)>``. Verifiers trust a key by
its *verifier key* string ``<name>+<8 hex key ID>+<base64(type byte || public key)>``;
only Ed25519 (signature type ``0x01``) is supported here.

The text of a note means nothing until a trusted signature on it has been checked,
so the one function that returns text is :func:`open_note`: it verifies first and
callers parse the verified text afterwards (checkpoints do exactly that).

>>> signer = Signer.from_seed("example.com/log", bytes(32))
>>> signed = sign_note("hello\\n", [signer])
>>> signed.splitlines()[2][:18]
'— example.com/log '
>>> open_note(signed, [signer.verifier_key]).text
'hello\\n'
>>> parse_vkey(signer.vkey) == signer.verifier_key
True
"""

from __future__ import annotations

import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import nacl.exceptions
import nacl.signing

from verifier.errors import (
    InvalidSignature,
    MalformedKey,
    MalformedNote,
    TooManySignatures,
    UnknownKey,
)

__all__ = [
    "MAX_SIGNATURES",
    "SIG_TYPE_ED25519",
    "Note",
    "NoteSignature",
    "Signer",
    "VerifiedNote",
    "VerifierKey",
    "format_signer_key",
    "format_vkey",
    "key_id",
    "open_note",
    "parse_note",
    "parse_signer_key",
    "parse_vkey",
    "sign_note",
]

MAX_SIGNATURES = 100
"""Most signature lines a note may carry. C2SP signed-note §Format asks verifiers to
cap the count and to accept at least 16; Go's ``note.Open`` refuses more than 100."""

SIG_TYPE_ED25519 = 0x01
"""Signature type byte of Ed25519 note signatures (C2SP signed-note §Signature types)."""

KEY_ID_SIZE = 4
ED25519_KEY_SIZE = 32
ED25519_SIG_SIZE = 64

_EM_DASH_PREFIX = "— "  # U+2014 EM DASH, U+0020 SPACE
_SIGNER_PREFIX = "PRIVATE+KEY+"
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")  # ASCII controls other than "\n"
_HEX_KEY_ID = re.compile(r"[0-9a-f]{8}")


# --- helpers shared by the sibling modules (checkpoint, receipt) -----------------------


def _b64decode_canonical(text: str) -> bytes | None:
    """Return the bytes of ``text`` if it is canonical standard padded base64, else None.

    RFC 4648 §4 alphabet with ``=`` padding, nothing else (no whitespace), and the
    unused low bits of the last character zero, so that exactly one string encodes
    any byte string: a changed character can never decode to the same bytes.
    """
    try:
        encoded = text.encode("ascii")
        raw = binascii.a2b_base64(encoded, strict_mode=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        return None
    if binascii.b2a_base64(raw, newline=False) != encoded:
        return None
    return raw


def _b64encode(raw: bytes) -> str:
    """Return standard padded base64 (RFC 4648 §4) of ``raw`` as text."""
    return binascii.b2a_base64(raw, newline=False).decode("ascii")


def _name_problem(name: str) -> str | None:
    """Return why ``name`` is not a valid key name, or None if it is.

    C2SP signed-note §Format: key names are non-empty and contain no Unicode spaces
    and no ``+``. We also refuse ASCII control characters, which no note may carry,
    and lone surrogates, which are not UTF-8.
    """
    if not name:
        return "key name is empty"
    if "+" in name:
        return f"key name {name!r} contains '+'"
    if any(ch.isspace() for ch in name) or _CONTROL.search(name):
        return f"key name {name!r} contains whitespace or a control character"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return f"key name {name!r} is not valid UTF-8"
    return None


def key_id(name: str, sig_type: int, public_key: bytes) -> bytes:
    """Return the 4-byte key ID ``SHA-256(name || 0x0A || sig_type || public_key)[:4]``.

    C2SP signed-note §Signatures (the recommended key ID; for Ed25519 the required one
    in practice, since Go checks it). Requires 0 <= sig_type <= 255.
    """
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([sig_type]) + public_key).digest()
    return digest[:KEY_ID_SIZE]


# --- verifier keys -----------------------------------------------------------------------


@dataclass(frozen=True)
class VerifierKey:
    """A trusted public key that can check note signatures (Ed25519 only).

    Construction checks the key: a valid name, a 32-byte public key, signature type
    ``0x01`` and the C2SP key ID for that name and key; otherwise it raises
    :class:`~verifier.errors.MalformedKey`.
    """

    name: str
    key_id: bytes
    sig_type: int
    public_key: bytes
    _nacl_key: nacl.signing.VerifyKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        problem = _name_problem(self.name)
        if problem is not None:
            raise MalformedKey(problem)
        if self.sig_type != SIG_TYPE_ED25519:
            raise MalformedKey(
                f"key {self.name!r}: unsupported signature type 0x{self.sig_type:02x} "
                f"(only Ed25519, 0x{SIG_TYPE_ED25519:02x}, is supported)"
            )
        if len(self.public_key) != ED25519_KEY_SIZE:
            raise MalformedKey(
                f"key {self.name!r}: Ed25519 public key is {len(self.public_key)} bytes, "
                f"want {ED25519_KEY_SIZE}"
            )
        want = key_id(self.name, self.sig_type, self.public_key)
        if self.key_id != want:
            raise MalformedKey(
                f"key {self.name!r}: key ID {self.key_id.hex()} does not match the key "
                f"(SHA-256(name || 0x0A || type || key)[:4] is {want.hex()})"
            )
        object.__setattr__(self, "_nacl_key", nacl.signing.VerifyKey(self.public_key))

    @classmethod
    def from_public_key(cls, name: str, public_key: bytes) -> VerifierKey:
        """Return the Ed25519 verifier key for ``name`` and a raw 32-byte public key.

        Raises MalformedKey for a bad name or key length.
        """
        return cls(name, key_id(name, SIG_TYPE_ED25519, public_key), SIG_TYPE_ED25519, public_key)

    @property
    def label(self) -> str:
        """Return ``name+<hex key ID>``, the way Go names a key in its messages."""
        return f"{self.name}+{self.key_id.hex()}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Return whether ``signature`` is a valid Ed25519 signature of ``message``
        (RFC 8032) by this key. Never raises for a bad signature."""
        if len(signature) != ED25519_SIG_SIZE:
            return False
        try:
            self._nacl_key.verify(message, signature)
        except nacl.exceptions.BadSignatureError:
            return False
        return True


def parse_vkey(vkey: str) -> VerifierKey:
    """Return the key encoded by a verifier key string ``name+<hex id>+<base64(type||key)>``.

    C2SP signed-note; Go ``note.NewVerifier``. The key ID must be 8 lowercase hex digits
    and equal the key ID computed from the name and key. Raises MalformedKey otherwise,
    and for a bad name, bad base64, an unknown signature type or a wrong key length.
    """
    parts = vkey.split("+", 2)  # the base64 part may itself contain '+'
    if len(parts) != 3:
        raise MalformedKey(f"verifier key {vkey!r} is not of the form name+keyid+base64key")
    name, hex_id, key64 = parts
    problem = _name_problem(name)
    if problem is not None:
        raise MalformedKey(f"verifier key {vkey!r}: {problem}")
    if not _HEX_KEY_ID.fullmatch(hex_id):
        raise MalformedKey(
            f"verifier key {vkey!r}: key ID {hex_id!r} is not 8 lowercase hex digits"
        )
    raw = _b64decode_canonical(key64)
    if raw is None or len(raw) < 2:
        raise MalformedKey(f"verifier key {vkey!r}: key data is not valid base64")
    try:
        return VerifierKey(name, bytes.fromhex(hex_id), raw[0], raw[1:])
    except MalformedKey as err:
        raise MalformedKey(f"verifier key {vkey!r}: {err}") from None


def format_vkey(key: VerifierKey) -> str:
    """Return the verifier key string ``name+<hex id>+<base64(type||key)>`` for ``key``."""
    return f"{key.label}+{_b64encode(bytes([key.sig_type]) + key.public_key)}"


# --- signers ----------------------------------------------------------------------------


class Signer:
    """An Ed25519 note signer: a key name and a private key.

    The 32-byte RFC 8032 seed is available as :attr:`seed` so the log can persist it;
    ``repr()`` shows only the public identity, never the seed.
    """

    __slots__ = ("_signing_key", "_verifier_key")

    def __init__(self, name: str, seed: bytes) -> None:
        """Build a signer from a key name and a 32-byte seed; raises MalformedKey."""
        problem = _name_problem(name)
        if problem is not None:
            raise MalformedKey(problem)
        if len(seed) != ED25519_KEY_SIZE:
            raise MalformedKey(f"Ed25519 seed is {len(seed)} bytes, want {ED25519_KEY_SIZE}")
        self._signing_key = nacl.signing.SigningKey(bytes(seed))
        self._verifier_key = VerifierKey.from_public_key(name, bytes(self._signing_key.verify_key))

    @classmethod
    def generate(cls, name: str) -> Signer:
        """Return a signer with a fresh random key; raises MalformedKey for a bad name."""
        return cls(name, bytes(nacl.signing.SigningKey.generate()))

    @classmethod
    def from_seed(cls, name: str, seed: bytes) -> Signer:
        """Return the signer for ``name`` and a 32-byte Ed25519 seed; raises MalformedKey."""
        return cls(name, seed)

    @property
    def name(self) -> str:
        """The key name written in signature lines."""
        return self._verifier_key.name

    @property
    def key_id(self) -> bytes:
        """The 4-byte C2SP key ID."""
        return self._verifier_key.key_id

    @property
    def public_key(self) -> bytes:
        """The 32-byte Ed25519 public key."""
        return self._verifier_key.public_key

    @property
    def seed(self) -> bytes:
        """The 32-byte Ed25519 private seed. Keep it secret."""
        return bytes(self._signing_key)

    @property
    def verifier_key(self) -> VerifierKey:
        """The matching :class:`VerifierKey`."""
        return self._verifier_key

    @property
    def vkey(self) -> str:
        """The matching verifier key string, to publish to verifiers."""
        return format_vkey(self._verifier_key)

    def sign(self, message: bytes) -> bytes:
        """Return the 64-byte Ed25519 signature (RFC 8032) of ``message``."""
        return self._signing_key.sign(message).signature

    def __repr__(self) -> str:
        return f"Signer(name={self.name!r}, key_id={self.key_id.hex()!r})"


def parse_signer_key(skey: str) -> Signer:
    """Return the signer encoded as ``PRIVATE+KEY+<name>+<hex id>+<base64(0x01||seed)>``.

    Go ``note.NewSigner`` format. The key ID must match the public key derived from
    the seed. Raises MalformedKey otherwise. Error messages never include the seed.
    """
    if not skey.startswith(_SIGNER_PREFIX):
        raise MalformedKey("signer key does not start with PRIVATE+KEY+")
    parts = skey[len(_SIGNER_PREFIX) :].split("+", 2)
    if len(parts) != 3:
        raise MalformedKey("signer key is not of the form PRIVATE+KEY+name+keyid+base64key")
    name, hex_id, key64 = parts
    problem = _name_problem(name)
    if problem is not None:
        raise MalformedKey(f"signer key: {problem}")
    if not _HEX_KEY_ID.fullmatch(hex_id):
        raise MalformedKey(f"signer key {name!r}: key ID is not 8 lowercase hex digits")
    raw = _b64decode_canonical(key64)
    if raw is None or len(raw) < 1:
        raise MalformedKey(f"signer key {name!r}: key data is not valid base64")
    if raw[0] != SIG_TYPE_ED25519:
        raise MalformedKey(f"signer key {name!r}: unsupported signature type 0x{raw[0]:02x}")
    if len(raw) != 1 + ED25519_KEY_SIZE:
        raise MalformedKey(f"signer key {name!r}: Ed25519 seed is {len(raw) - 1} bytes, want 32")
    signer = Signer(name, raw[1:])
    if signer.key_id.hex() != hex_id:
        raise MalformedKey(
            f"signer key {name!r}: key ID {hex_id} does not match the key ({signer.key_id.hex()})"
        )
    return signer


def format_signer_key(signer: Signer) -> str:
    """Return Go's ``PRIVATE+KEY+<name>+<hex id>+<base64(0x01||seed)>`` for ``signer``.

    The result is a secret: anyone holding it can sign as this key.
    """
    encoded = _b64encode(bytes([SIG_TYPE_ED25519]) + signer.seed)
    return f"{_SIGNER_PREFIX}{signer.name}+{signer.key_id.hex()}+{encoded}"


# --- notes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: the key name, the 4-byte key ID and the signature bytes."""

    name: str
    key_id: bytes
    signature: bytes

    @property
    def label(self) -> str:
        """Return ``name+<hex key ID>``, the identity of the key that claims to have signed."""
        return f"{self.name}+{self.key_id.hex()}"


@dataclass(frozen=True)
class Note:
    """A note split into text and signatures. Nothing here has been verified."""

    text: str
    signatures: tuple[NoteSignature, ...]


@dataclass(frozen=True)
class VerifiedNote:
    """A note whose text was signed by every key in ``verified_by`` (at least one).

    ``signatures`` lists every signature line of the note, verified or not.
    """

    text: str
    verified_by: tuple[VerifierKey, ...]
    signatures: tuple[NoteSignature, ...]


def _decode_note(data: bytes | str) -> str:
    """Return ``data`` as text if it is UTF-8 without ASCII controls other than newline.

    C2SP signed-note §Format. Raises MalformedNote.
    """
    if isinstance(data, str):
        text = data
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise MalformedNote("malformed note: not valid UTF-8 (lone surrogate)") from None
    else:
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as err:
            raise MalformedNote(
                f"malformed note: not valid UTF-8 (byte {err.start}: {err.reason})"
            ) from None
    bad = _CONTROL.search(text)
    if bad is not None:
        raise MalformedNote(
            f"malformed note: control character {bad.group()!r} at offset {bad.start()}"
        )
    return text


def _parse_signature_line(line: str, number: int) -> NoteSignature:
    """Return the signature on one line ``— <name> <base64(id || sig)>``; raises MalformedNote."""
    if not line.startswith(_EM_DASH_PREFIX):
        raise MalformedNote(
            f"malformed note: signature line {number} does not start with '— ': {line[:80]!r}"
        )
    name, sep, sig64 = line[len(_EM_DASH_PREFIX) :].partition(" ")
    problem = _name_problem(name)
    if not sep or problem is not None:
        raise MalformedNote(
            f"malformed note: signature line {number}: {problem or 'no signature after the name'}"
        )
    raw = _b64decode_canonical(sig64)
    if raw is None:
        raise MalformedNote(
            f"malformed note: signature line {number} ({name}): signature is not canonical base64"
        )
    if len(raw) <= KEY_ID_SIZE:
        raise MalformedNote(
            f"malformed note: signature line {number} ({name}): {len(raw)} bytes is too short "
            "for a key ID and a signature"
        )
    return NoteSignature(name, raw[:KEY_ID_SIZE], raw[KEY_ID_SIZE:])


def parse_note(data: bytes | str) -> Note:
    """Return the text and signatures of a signed note, without verifying anything.

    C2SP signed-note §Format: UTF-8 with no control characters but newline, text ending
    in newline, separated from the signature lines by the *last* blank line, then one or
    more lines ``— <name> <base64(4-byte key ID || signature)>``, each ending in newline.
    Raises TooManySignatures beyond :data:`MAX_SIGNATURES` lines and MalformedNote for
    anything else that is not well formed.
    """
    note = _decode_note(data)
    split = note.rfind("\n\n")
    if split < 0:
        raise MalformedNote("malformed note: no blank line before the signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block:
        raise MalformedNote("malformed note: no signature lines after the last blank line")
    if not block.endswith("\n"):
        raise MalformedNote("malformed note: the last signature line does not end in a newline")
    count = block.count("\n")
    if count > MAX_SIGNATURES:
        raise TooManySignatures(
            f"malformed note: {count} signature lines, more than the limit of {MAX_SIGNATURES}"
        )
    lines = block[:-1].split("\n")
    signatures = tuple(_parse_signature_line(line, i) for i, line in enumerate(lines, 1))
    return Note(text, signatures)


def sign_note(text: str, signers: Sequence[Signer]) -> str:
    """Return ``text`` signed by each signer: text, blank line, one signature line each.

    C2SP signed-note §Format; byte-identical to Go's ``note.Sign`` (Ed25519 is
    deterministic). Requires text to be a valid note text: ending in ``"\\n"``, no ASCII
    control characters other than newline. Raises MalformedNote otherwise, or when
    ``signers`` is empty (a note needs a signature).
    """
    _decode_note(text)
    if not text.endswith("\n"):
        raise MalformedNote("note text must end in a newline")
    if not signers:
        raise MalformedNote("a signed note needs at least one signer")
    message = text.encode("utf-8")
    lines = [
        f"{_EM_DASH_PREFIX}{s.name} {_b64encode(s.key_id + s.sign(message))}\n" for s in signers
    ]
    return text + "\n" + "".join(lines)


def open_note(data: bytes | str, keys: Sequence[VerifierKey]) -> VerifiedNote:
    """Return the note's text once at least one trusted key's signature on it verifies.

    C2SP signed-note §Signatures:

    1. parse the note (MalformedNote, TooManySignatures);
    2. ignore signatures whose (name, key ID) matches no key in ``keys``;
    3. verify every signature that does match; one failure raises InvalidSignature
       (the spec's SHOULD reject: a trusted key never signs garbage);
    4. if no trusted key signed, raise UnknownKey.

    Identical repeated signature lines are checked once. Callers parse the returned
    text, never the unverified input.
    """
    note = parse_note(data)
    trusted: dict[tuple[str, bytes], VerifierKey] = {}
    for key in keys:
        known = trusted.setdefault((key.name, key.key_id), key)
        if known != key:
            raise MalformedKey(
                f"two different trusted keys are both named {key.label}; refusing to guess"
            )
    message = note.text.encode("utf-8")
    verified: dict[tuple[str, bytes], VerifierKey] = {}
    checked: set[NoteSignature] = set()
    for sig in note.signatures:
        signer = trusted.get((sig.name, sig.key_id))
        if signer is None or sig in checked:
            continue
        checked.add(sig)
        if not signer.verify(message, sig.signature):
            raise InvalidSignature(f"invalid signature for key {sig.label}")
        verified.setdefault((sig.name, sig.key_id), signer)
    if not verified:
        signed = ", ".join(sig.label for sig in note.signatures)
        wanted = ", ".join(sorted(key.label for key in trusted.values())) or "none"
        raise UnknownKey(
            f"note has no verifiable signatures: it is signed by {signed}; trusted keys: {wanted}"
        )
    return VerifiedNote(note.text, tuple(verified.values()), note.signatures)
