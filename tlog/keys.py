"""Signing keys on disk: one Ed25519 key file per log, mode 0600.

A key file holds one line in Go's ``note`` signer format,
``PRIVATE+KEY+<name>+<key id>+<base64(0x01 || seed)>``. The key name is the log's
origin (C2SP tlog-checkpoint: the log's key name SHOULD equal its origin). A key
file is created once, with O_EXCL, and never rewritten; its secret never reaches a
log line or an error message.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tlog.errors import KeyProblem
from verifier.errors import MalformedKey
from verifier.note import Signer, format_signer_key, parse_signer_key

__all__ = ["create_key", "load_key", "load_key_any"]


def create_key(path: Path, name: str) -> Signer:
    """Generate a new Ed25519 key named ``name`` and write it to ``path`` with mode 0600.

    Returns the signer. Raises KeyProblem if the file already exists or cannot be written.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    signer = Signer.generate(name)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise KeyProblem(f"key file {path} already exists; refusing to replace a key") from exc
    except OSError as exc:
        raise KeyProblem(f"cannot create key file {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(format_signer_key(signer) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return signer


def load_key_any(path: Path) -> Signer:
    """Return the signer stored at ``path`` whatever its name (e.g. the owner key).

    Raises KeyProblem as load_key does.
    """
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError as exc:
        raise KeyProblem(f"key file {path} is missing") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyProblem(f"cannot read key file {path}") from exc
    try:
        name = parse_signer_key(text.strip()).name
    except MalformedKey as exc:
        raise KeyProblem(f"key file {path} does not hold a valid signer key") from exc
    return load_key(path, name)


def load_key(path: Path, name: str) -> Signer:
    """Return the signer stored at ``path``, which must be named ``name``.

    Raises KeyProblem if the file is missing, readable by group or others, malformed,
    or holds a key with another name.
    """
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii")
    except FileNotFoundError as exc:
        raise KeyProblem(f"key file {path} is missing") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyProblem(f"cannot read key file {path}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyProblem(f"key file {path} is readable by others; chmod 600 it")
    try:
        signer = parse_signer_key(text.strip())
    except MalformedKey as exc:
        # Do not echo the file's contents: it is a secret.
        raise KeyProblem(f"key file {path} does not hold a valid signer key") from exc
    if signer.name != name:
        raise KeyProblem(f"key file {path} holds a key for {signer.name!r}, expected {name!r}")
    return signer
