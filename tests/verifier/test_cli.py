"""Tests for ``tlog-verify``: the real console script on real checkpoints and receipts.

A few runs go through a subprocess (the installed script and ``python -m verifier``)
to prove what a user sees: exit status, one stderr line, never a traceback. The
exhaustive tamper loops call :func:`verifier.cli.main` in-process for speed.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import VECTORS
from verifier import cli
from verifier.checkpoint import Checkpoint, sign_checkpoint
from verifier.hashing import leaf_hash
from verifier.note import Signer
from verifier.receipt import Receipt, format_receipt


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return data


TESSERA = _load("tessera-testdata-log.json")
TESSERA_DIR = VECTORS / TESSERA["dir"]
TESSERA_VKEY: str = TESSERA["vkey"]
TESSERA_ORIGIN: str = TESSERA["origin_line"]
SIGSTORE = _load("sigstore-rekor-v2-staging-entry.json")
SIGSTORE_ORIGIN = "log2025-alpha1.rekor.sigstage.dev"
SIGSTORE_LEAF = base64.b64decode(SIGSTORE["canonicalized_body_b64"])
GO = _load("go-sumdb-note.json")
PETER_VKEY: str = GO["keys"]["PeterNeumann"]["vkey"]

SCRIPT = Path(sys.executable).with_name("tlog-verify")


def _sigstore_receipt() -> str:
    return format_receipt(
        Receipt(
            index=SIGSTORE["log_index"],
            proof=tuple(base64.b64decode(h) for h in SIGSTORE["inclusion_proof_b64"]),
            checkpoint=SIGSTORE["checkpoint"],
            extra=SIGSTORE_LEAF,
        )
    )


def _run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m verifier`` with ``args``; return the finished process."""
    proc = subprocess.run(
        [sys.executable, "-m", "verifier", *args],
        input=stdin.decode("utf-8", "surrogateescape") if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in proc.stderr
    return proc


def _one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("tlog-verify: ")
    return lines[0]


# --- accepting real data, through real processes -------------------------------------


def test_console_script_verifies_latest_tessera_checkpoint() -> None:
    if not SCRIPT.exists():
        pytest.skip(f"console script not installed at {SCRIPT}")
    proc = subprocess.run(
        [str(SCRIPT), "checkpoint", str(TESSERA_DIR / "checkpoint"), "--vkey", TESSERA_VKEY],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert lines[0] == "verified checkpoint"
    out = proc.stdout
    assert TESSERA_ORIGIN in out and "15" in out and "example.com/log/testdata" in out


@pytest.mark.parametrize("size", range(16))
def test_every_tessera_checkpoint_accepted(size: int) -> None:
    path = TESSERA_DIR / f"checkpoint.{size}"
    proc = _run("checkpoint", str(path), "--vkey", TESSERA_VKEY, "--origin", TESSERA_ORIGIN)
    assert proc.returncode == 0, proc.stderr
    assert f"size:      {size}\n" in proc.stdout
    root_line = path.read_text().split("\n")[2]
    assert f"root:      {root_line}\n" in proc.stdout


def test_sigstore_checkpoint_from_stdin_json() -> None:
    proc = _run(
        "checkpoint", "-", "--vkey", SIGSTORE["vkey"], "--json",
        stdin=SIGSTORE["checkpoint"].encode(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result == {
        "ok": True,
        "kind": "checkpoint",
        "origin": SIGSTORE_ORIGIN,
        "size": 646,
        "root": SIGSTORE["root_hash_b64"],
        "extensions": [],
        "signed_by": [SIGSTORE_ORIGIN],
    }


def test_sigstore_receipt(tmp_path: Path) -> None:
    path = tmp_path / "entry.tlog-proof"
    path.write_text(_sigstore_receipt())
    proc = _run("receipt", str(path), "--vkey", SIGSTORE["vkey"], "--origin", SIGSTORE_ORIGIN)
    assert proc.returncode == 0, proc.stderr
    assert "verified receipt" in proc.stdout
    assert "index:     645" in proc.stdout
    digest = hashlib.sha256(SIGSTORE_LEAF).hexdigest()
    assert f"{len(SIGSTORE_LEAF)} bytes, sha256 {digest}" in proc.stdout

    proc = _run("receipt", str(path), "--vkey", SIGSTORE["vkey"], "--json")
    result = json.loads(proc.stdout)
    assert result["ok"] is True and result["kind"] == "receipt"
    assert (result["index"], result["size"], result["origin"]) == (645, 646, SIGSTORE_ORIGIN)
    assert (result["leaf_size"], result["leaf_sha256"]) == (len(SIGSTORE_LEAF), digest)
    assert result["signed_by"] == [SIGSTORE_ORIGIN]


def test_failure_is_one_line_and_exit_1() -> None:
    # A Go-signed note that is not a checkpoint: signature fine, body refused.
    note = GO["sign"]["want_note"].encode()
    proc = _run("checkpoint", "-", "--vkey", PETER_VKEY, stdin=note)
    assert proc.returncode == 1
    assert "checkpoint" in _one_error_line(proc.stderr)
    assert proc.stdout == ""
    # A real checkpoint checked against the wrong key.
    proc = _run("checkpoint", str(TESSERA_DIR / "checkpoint"), "--vkey", PETER_VKEY, "--json")
    assert proc.returncode == 1
    assert "no verifiable signatures" in _one_error_line(proc.stderr)
    assert json.loads(proc.stdout) == {
        "ok": False,
        "error": "UnknownKey",
        "message": _one_error_line(proc.stderr).removeprefix("tlog-verify: "),
    }


def test_usage_errors_exit_2_in_a_real_process(tmp_path: Path) -> None:
    for args in (
        (),
        ("checkpoint",),
        ("checkpoint", str(TESSERA_DIR / "checkpoint")),  # no --vkey
        ("frobnicate",),
        ("checkpoint", str(tmp_path / "missing"), "--vkey", TESSERA_VKEY),
        ("checkpoint", str(tmp_path), "--vkey", TESSERA_VKEY),  # a directory
        ("checkpoint", str(TESSERA_DIR / "checkpoint"), "--vkey", "not-a-key"),
    ):
        proc = _run(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        _one_error_line(proc.stderr)
    proc = _run("--help")
    assert proc.returncode == 0 and "checkpoint" in proc.stdout and "receipt" in proc.stdout


# --- in-process: every byte changed -------------------------------------------------


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _tamper_every_byte(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    data: bytes,
    command: list[str],
) -> int:
    """Check every single-byte change of ``data`` (read as ``-``, stdin) fails with exit 1.

    Returns how many variants were tried. Stdin instead of files: writing hundreds
    of temporary files is slow on some filesystems.
    """

    def run(payload: bytes) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(payload)))
        return _main(capsys, command[0], "-", *command[1:])

    assert run(data)[0] == 0
    count = 0
    for pos in range(len(data)):
        for flip in (0x01, 0x40):
            mutated = bytearray(data)
            mutated[pos] ^= flip
            code, out, err = run(bytes(mutated))
            assert code == 1, f"byte {pos} ^ {flip:#x} was accepted"
            assert out == ""
            _one_error_line(err)
            count += 1
    return count


def test_tessera_checkpoint_any_byte_changed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = (TESSERA_DIR / "checkpoint").read_bytes()
    count = _tamper_every_byte(capsys, monkeypatch, data, ["checkpoint", "--vkey", TESSERA_VKEY])
    assert count == 2 * len(data)


def test_sigstore_checkpoint_any_byte_changed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = SIGSTORE["checkpoint"].encode()
    _tamper_every_byte(capsys, monkeypatch, data, ["checkpoint", "--vkey", SIGSTORE["vkey"]])


def test_small_receipt_any_byte_changed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    signer = Signer.from_seed("example.com/cli", bytes(32))
    leaf = b"the only leaf"
    checkpoint = sign_checkpoint(Checkpoint("example.com/cli", 1, leaf_hash(leaf)), signer)
    data = format_receipt(Receipt(0, (), checkpoint, leaf)).encode()
    _tamper_every_byte(capsys, monkeypatch, data, ["receipt", "--vkey", signer.vkey])


# --- in-process: options and edge cases ---------------------------------------------


def test_receipt_leaf_option(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    receipt = tmp_path / "r.tlog-proof"
    receipt.write_text(_sigstore_receipt())
    leaf = tmp_path / "leaf"
    leaf.write_bytes(SIGSTORE_LEAF)
    base = ["receipt", str(receipt), "--vkey", SIGSTORE["vkey"]]
    assert _main(capsys, *base, "--leaf", str(leaf))[0] == 0
    leaf.write_bytes(SIGSTORE_LEAF + b"\n")
    code, _, err = _main(capsys, *base, "--leaf", str(leaf))
    assert code == 1 and "different leaf" in _one_error_line(err)
    code, _, err = _main(capsys, *base, "--leaf", str(tmp_path / "nope"))
    assert code == 2 and "cannot read" in _one_error_line(err)
    code, _, err = _main(capsys, *base, "--origin", "example.com/other")
    assert code == 1 and "origin" in _one_error_line(err)


def test_several_vkeys(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(TESSERA_DIR / "checkpoint.7")
    code, out, _ = _main(
        capsys, "checkpoint", path, "--vkey", PETER_VKEY, "--vkey", TESSERA_VKEY, "--json"
    )
    assert code == 0
    assert json.loads(out)["signed_by"] == [TESSERA_ORIGIN]


def test_stdin_in_process(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = (TESSERA_DIR / "checkpoint.2").read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert _main(capsys, "checkpoint", "-", "--vkey", TESSERA_VKEY)[0] == 0
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    code, _, err = _main(capsys, "checkpoint", "-", "--vkey", TESSERA_VKEY)
    assert code == 1 and "malformed note" in _one_error_line(err)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\xff\xfe garbage")))
    assert _main(capsys, "receipt", "-", "--vkey", TESSERA_VKEY)[0] == 1


def test_oversized_input_refused(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "MAX_INPUT_BYTES", 64)
    code, _, err = _main(
        capsys, "checkpoint", str(TESSERA_DIR / "checkpoint"), "--vkey", TESSERA_VKEY
    )
    assert code == 2 and "larger than 64 bytes" in _one_error_line(err)


def test_usage_errors_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(TESSERA_DIR / "checkpoint")
    for args in (
        ["checkpoint", path, "--vkey", TESSERA_VKEY, "--bogus"],
        ["checkpoint", path, "--vkey"],
        ["receipt"],
        ["checkpoint", path, "--vkey", TESSERA_VKEY.replace("33d7b496", "33d7b497")],
    ):
        code, out, err = _main(capsys, *args)
        assert code == 2, args
        _one_error_line(err)
    code, out, err = _main(capsys, "checkpoint", path, "--vkey", "bad", "--json")
    assert code == 2 and json.loads(out)["ok"] is False
    assert _main(capsys, "checkpoint", "--help")[0] == 0
