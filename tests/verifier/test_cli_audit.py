"""Tests for the auditor's commands of ``tlog-verify``: ``log``, ``consistency`` and
``receipt --log/--body``. What a user sees: exit status 0/1/2, one stderr line on
failure naming the failure and the tile, index or URL, never a traceback.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reference import consistency_proof, inclusion_path
from tests.verifier.test_audit import (
    ORIGIN,
    SIGNER,
    TESSERA_DIR,
    TESSERA_LEAVES,
    answer,
    closed_port,
    leaves_of,
    proof_route,
    serve,
    tessera_files,
    tessera_receipt,
    write_log,
)
from verifier import cli
from verifier.checkpoint import Checkpoint, sign_checkpoint
from verifier.receipt import Receipt, format_receipt

VKEY = "example.com/log/testdata+33d7b496+AeHTu4Q3hEIMHNqc6fASMsq3rKNx280NI+oO5xCFkkSx"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``tlog-verify`` in-process; return (exit status, stdout, stderr)."""
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("tlog-verify: ")
    return lines[0]


def copy_tessera(root: Path, size: int = 15) -> Path:
    for path, data in tessera_files(size).items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return root


# --- tlog-verify log -------------------------------------------------------------------


def test_log_in_a_real_process() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "verifier", "log", str(TESSERA_DIR), "--vkey", VKEY],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # not a TTY: no progress bar
    assert proc.stdout.startswith("audited log\n")
    assert "size:      15\n" in proc.stdout
    assert "15 leaves from 1 entry bundles" in proc.stdout


def test_log_json_and_state(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    code, out, _ = run(capsys, "log", str(TESSERA_DIR), "--vkey", VKEY, "--state", str(state))
    assert code == 0 and "first audit with this state file" in out and "saved to" in out
    code, out, _ = run(
        capsys, "log", str(TESSERA_DIR), "--vkey", VKEY, "--state", str(state), "--json"
    )
    result = json.loads(out)
    assert code == 0 and result["ok"] is True and result["kind"] == "log"
    assert result["previous"] == {"size": 15, "root": result["root"]}
    assert (result["entries"], result["bundles"], result["tiles"]) == (15, 1, 1)


def test_log_progress_bar(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    write_log(tmp_path, leaves_of(1000))
    code, _, err = run(capsys, "log", str(tmp_path), "--vkey", SIGNER.vkey, "--progress")
    assert code == 0
    assert "100.0% 1,000/1,000 entries" in err and "entries/s" in err
    assert err.endswith("\r")  # the bar is erased before the report


def test_log_tampered_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    log = copy_tessera(tmp_path / "log")
    tile = log / "tile/0/000.p/15"
    good = tile.read_bytes()
    tile.write_bytes(good[:100] + bytes([good[100] ^ 1]) + good[101:])
    code, out, err = run(capsys, "log", str(log), "--vkey", VKEY)
    assert code == 1 and out == ""
    assert "tile/entries/000.p/15: entry 3 (leaf index 3) hashes to" in one_line(err)
    assert "but tile/0/000.p/15 holds" in err
    tile.write_bytes(good[:-5])
    code, _, err = run(capsys, "log", str(log), "--vkey", VKEY, "--json")
    assert code == 1
    assert "tile/0/000.p/15: 475 bytes, want 480" in one_line(err)
    tile.unlink()
    code, out, err = run(capsys, "log", str(log), "--vkey", VKEY, "--json")
    assert code == 1 and json.loads(out)["error"] == "ResourceNotFound"
    assert "tile/0/000.p/15: not in the log directory" in one_line(err)


def test_log_other_key_and_backwards_state(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, "log", str(TESSERA_DIR), "--vkey", SIGNER.vkey)
    assert code == 1 and "checkpoint (" in one_line(err) and "no verifiable signatures" in err
    state = str(tmp_path / "state.json")
    assert run(capsys, "log", str(TESSERA_DIR), "--vkey", VKEY, "--state", state)[0] == 0
    smaller = copy_tessera(tmp_path / "smaller", size=9)
    code, _, err = run(capsys, "log", str(smaller), "--vkey", VKEY, "--state", state)
    assert code == 1
    assert "log shrank" in one_line(err) and "sizes went backwards" in err


def test_log_forked_tree(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    leaves = leaves_of(300)
    forked = leaves_of(350)
    forked[2] = b"rewritten"
    write_log(tmp_path / "a", leaves)
    write_log(tmp_path / "b", forked)
    state = str(tmp_path / "state.json")
    assert run(capsys, "log", str(tmp_path / "a"), "--vkey", SIGNER.vkey, "--state", state)[0] == 0
    code, _, err = run(capsys, "log", str(tmp_path / "b"), "--vkey", SIGNER.vkey, "--state", state)
    assert code == 1
    assert "rewrote history: its first 300 leaves (up to leaf index 299, in " in one_line(err)
    assert "tile/entries/001.p/94" in err


def test_log_usage_and_io_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad_state = tmp_path / "state.json"
    bad_state.write_text("{")
    for args in (
        ["log", str(tmp_path / "missing"), "--vkey", VKEY],
        ["log", "http://", "--vkey", VKEY],
        ["log", "ftp://example.com/log", "--vkey", VKEY],
        ["log", f"http://127.0.0.1:{closed_port()}/log", "--vkey", VKEY],
        ["log", str(TESSERA_DIR), "--vkey", VKEY, "--state", str(bad_state)],
        ["log", str(TESSERA_DIR), "--vkey", VKEY, "--state", str(tmp_path / "no/dir/s.json")],
        ["log", str(TESSERA_DIR), "--vkey", VKEY, "--timeout", "0"],
        ["log", str(TESSERA_DIR), "--vkey", VKEY, "--timeout", "soon"],
        ["log", str(TESSERA_DIR)],
    ):
        code, _, err = run(capsys, *args)
        assert code == 2, (args, err)
        one_line(err)


def test_log_over_http(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    files = tessera_files()
    with serve(files, token="tok") as (url, _):
        monkeypatch.setenv("TLOG_TOKEN", "tok")
        code, out, err = run(capsys, "log", url, "--vkey", VKEY)
        assert code == 0, err
        assert "size:      15" in out
        monkeypatch.delenv("TLOG_TOKEN")
        code, _, err = run(capsys, "log", url, "--vkey", VKEY, "--token", "tok")
        assert code == 0
        code, _, err = run(capsys, "log", url, "--vkey", VKEY)
        assert code == 1 and "/log/checkpoint: HTTP 401" in one_line(err)


def test_log_over_http_failures(capsys: pytest.CaptureFixture[str]) -> None:
    files = tessera_files()
    with serve(files, routes={"tile/entries/000.p/15": answer(500)}) as (url, _):
        code, _, err = run(capsys, "log", url, "--vkey", VKEY)
        assert code == 1
        assert one_line(err) == (
            f"tlog-verify: GET {url}/tile/entries/000.p/15: HTTP 500 Internal Server Error"
        )
    with serve(files, routes={"hang": answer(200)}) as (url, _):
        code, out, err = run(capsys, "log", url, "--vkey", VKEY, "--timeout", "0.3", "--json")
        assert code == 1 and json.loads(out)["error"] == "FetchFailed"
        assert "no complete answer within 0.3 s (timeout)" in one_line(err)


# --- tlog-verify consistency ---------------------------------------------------------------


def _proof_file(tmp_path: Path, hashes: list[bytes]) -> str:
    path = tmp_path / "proof.txt"
    path.write_text("".join(base64.b64encode(h).decode() + "\n" for h in hashes))
    return str(path)


@pytest.mark.parametrize(("m", "n"), [(0, 15), (1, 15), (3, 7), (4, 8), (7, 15), (15, 15)])
def test_consistency_with_reference_proof_files(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, m: int, n: int
) -> None:
    old, new = str(TESSERA_DIR / f"checkpoint.{m}"), str(TESSERA_DIR / f"checkpoint.{n}")
    proof = consistency_proof(m, TESSERA_LEAVES[:n])
    code, out, err = run(
        capsys, "consistency", old, new, "--vkey", VKEY, "--proof", _proof_file(tmp_path, proof)
    )
    assert code == 0, err
    assert out.startswith("verified consistency\n")
    assert f"size {m}," in out and f"size {n}," in out and f"{len(proof)} hashes" in out
    if proof:
        bad = [proof[0], *proof] if m != n else proof
        code, _, err = run(
            capsys, "consistency", old, new, "--vkey", VKEY, "--proof", _proof_file(tmp_path, bad)
        )
        assert code == 1 and "does not extend the old one" in one_line(err)
    if m < n:
        code, _, err = run(
            capsys, "consistency", new, old, "--vkey", VKEY, "--proof", _proof_file(tmp_path, [])
        )
        assert code == 1 and "sizes went backwards" in one_line(err)


def test_consistency_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    old, new = str(TESSERA_DIR / "checkpoint.3"), str(TESSERA_DIR / "checkpoint.9")
    garbage = tmp_path / "garbage"
    garbage.write_text("not base64\n")
    code, _, err = run(capsys, "consistency", old, new, "--vkey", VKEY, "--proof", str(garbage))
    assert code == 1 and "line 1 is not one canonical base64" in one_line(err)
    code, _, err = run(capsys, "consistency", old, new, "--vkey", VKEY)
    assert code == 2 and "pass --proof FILE or --log URL" in one_line(err)
    code, _, err = run(
        capsys, "consistency", old, new, "--vkey", VKEY, "--proof", "x", "--log", "http://a"
    )
    assert code == 2 and "not allowed with argument" in one_line(err)
    code, _, err = run(capsys, "consistency", old, str(tmp_path / "nope"), "--vkey", VKEY)
    assert code == 2 and "cannot read" in one_line(err)
    other = tmp_path / "other"
    other.write_text(sign_checkpoint(Checkpoint(ORIGIN, 9, bytes(32)), SIGNER))
    code, _, err = run(
        capsys, "consistency", old, str(other), "--vkey", VKEY, "--vkey", SIGNER.vkey,
        "--proof", _proof_file(tmp_path, []),
    )  # fmt: skip
    assert code == 1 and "different logs" in one_line(err)


def test_consistency_from_the_log(capsys: pytest.CaptureFixture[str]) -> None:
    old, new = str(TESSERA_DIR / "checkpoint.7"), str(TESSERA_DIR / "checkpoint.15")
    with serve(tessera_files(), routes=proof_route(7, 15)) as (url, requested):
        code, out, err = run(capsys, "consistency", old, new, "--vkey", VKEY, "--log", url)
        assert code == 0, err
        assert f"({url}/proof/consistency?old=7&new=15)" in out
        assert requested == ["proof/consistency?old=7&new=15"]
    with serve(tessera_files(), routes=proof_route(7, 15, [bytes(32)])) as (url, _):
        code, _, err = run(capsys, "consistency", old, new, "--vkey", VKEY, "--log", url)
        assert code == 1 and "does not extend the old one" in one_line(err)
    with serve(tessera_files()) as (url, _):
        code, _, err = run(capsys, "consistency", old, new, "--vkey", VKEY, "--log", url)
        assert code == 1 and "proof/consistency?old=7&new=15: HTTP 404" in one_line(err)


# --- tlog-verify receipt: proven and not proven ---------------------------------------------


def _envelope(body: bytes) -> bytes:
    """A Bucket entry envelope as deterministic CBOR, encoded by hand (RFC 8949)."""

    def text(s: str) -> bytes:
        raw = s.encode()
        assert len(raw) < 24
        return bytes([0x60 | len(raw)]) + raw

    fields = [  # keys sorted bytewise by their encoding, as RFC 8949 §4.2.1 asks
        (text("v"), b"\x01"),
        (text("version"), b"\x01"),
        (text("metadata"), b"\xa1" + text("lang") + text("en")),
        (text("principal"), text("key:3f2a9c1d")),
        (text("body_size"), bytes([len(body)]) if len(body) < 24 else bytes([0x18, len(body)])),
        (text("prev_index"), b"\xf6"),
        (text("artifact_id"), text("algebra/linear-1")),
        (text("body_sha256"), b"\x58\x20" + hashlib.sha256(body).digest()),
        (text("integrated_at"), b"\x1b" + (1_700_000_000_000).to_bytes(8, "big")),
        (text("artifact_type"), text("lesson")),
        (text("product"), text("gurukul")),
    ]
    fields.sort(key=lambda kv: kv[0])
    return bytes([0xA0 | len(fields)]) + b"".join(k + v for k, v in fields)


def test_envelope_matches_the_service_encoder() -> None:
    entry = pytest.importorskip("tlog.entry")
    body = b"lesson one"
    envelope = entry.Envelope(
        product="gurukul", artifact_type="lesson", artifact_id="algebra/linear-1",
        version=1, prev_index=None, integrated_at=1_700_000_000_000,
        principal="key:3f2a9c1d", body_sha256=hashlib.sha256(body).digest(),
        body_size=len(body), metadata={"lang": "en"},
    )  # fmt: skip
    assert entry.encode_envelope(envelope) == _envelope(body)


def test_receipt_proven_and_not_proven(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    body = b"lesson one"
    leaves = [b"first", _envelope(body), b"third"]
    checkpoint = sign_checkpoint(Checkpoint(ORIGIN, 3, _mth(leaves)), SIGNER)
    receipt = tmp_path / "r.tlog-proof"
    receipt.write_text(
        format_receipt(Receipt(1, tuple(inclusion_path(1, leaves)), checkpoint, leaves[1]))
    )
    code, out, err = run(capsys, "receipt", str(receipt), "--vkey", SIGNER.vkey)
    assert code == 0, err
    proven, not_proven = out.split("NOT PROVEN")
    assert "PROVEN (by the log's signature and the inclusion proof):" in proven
    assert "is entry 1 of the tree of size 3" in proven
    assert f"signed by {SIGNER.verifier_key.label}" in proven
    assert "the entry's claims" in not_proven and "metadata" in not_proven
    assert "no body was checked (pass --body FILE)" in not_proven
    assert "pass --log URL" in not_proven
    assert "product:       gurukul" in not_proven
    assert "integrated_at: 1700000000000 (2023-11-14T22:13:20.000+00:00)" in not_proven

    body_file = tmp_path / "body"
    body_file.write_bytes(body)
    base = ["receipt", str(receipt), "--vkey", SIGNER.vkey]
    code, out, _ = run(capsys, *base, "--body", str(body_file), "--json")
    result = json.loads(out)
    assert code == 0 and result["body"]["size"] == len(body)
    assert any("is the body the leaf commits to" in p for p in result["proven"])
    assert result["envelope"]["artifact_id"] == "algebra/linear-1"
    body_file.write_bytes(body + b"!")
    code, _, err = run(capsys, *base, "--body", str(body_file))
    assert code == 1 and "the body has SHA-256" in one_line(err) and "11 bytes" in err
    code, _, err = run(capsys, *base, "--body", str(tmp_path / "nope"))
    assert code == 2 and "cannot read" in one_line(err)


def _mth(leaves: list[bytes]) -> bytes:
    from tests.reference import mth

    return mth(leaves)


def test_receipt_not_an_envelope(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    receipt = tmp_path / "r.tlog-proof"
    receipt.write_text(tessera_receipt(2, 5))
    code, out, _ = run(capsys, "receipt", str(receipt), "--vkey", VKEY)
    assert code == 0 and "it is not a Bucket entry envelope" in out
    code, _, err = run(capsys, "receipt", str(receipt), "--vkey", VKEY, "--body", str(receipt))
    assert code == 1 and "not an entry envelope" in one_line(err)


def test_receipt_with_log(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    receipt = tmp_path / "r.tlog-proof"
    receipt.write_text(tessera_receipt(4, 7))
    with serve(tessera_files(), routes=proof_route(7, 15)) as (url, _):
        code, out, err = run(capsys, "receipt", str(receipt), "--vkey", VKEY, "--log", url)
        assert code == 0, err
        assert "latest checkpoint (size 15" in out and "consistency proof 7 -> 15" in out
        code, out, _ = run(capsys, "receipt", str(receipt), "--vkey", VKEY, "--log", url, "--json")
        assert json.loads(out)["latest"]["size"] == 15
    with serve(tessera_files(5)) as (url, _):
        code, _, err = run(capsys, "receipt", str(receipt), "--vkey", VKEY, "--log", url)
        assert code == 1 and "sizes went backwards" in one_line(err)
    same_size = tessera_files()
    same_size["checkpoint"] = same_size["checkpoint.7"]
    with serve(same_size) as (url, requested):
        assert run(capsys, "receipt", str(receipt), "--vkey", VKEY, "--log", url)[0] == 0
        assert requested == ["checkpoint"]  # same tree: no proof to ask for
    with serve(tessera_files(), routes={"checkpoint": answer(503)}) as (url, _):
        code, _, err = run(capsys, "receipt", str(receipt), "--vkey", VKEY, "--log", url)
        assert code == 1 and "checkpoint: HTTP 503" in one_line(err)
    code, _, err = run(
        capsys,
        "receipt",
        str(receipt),
        "--vkey",
        VKEY,
        "--log",
        f"http://127.0.0.1:{closed_port()}",
    )
    assert code == 2 and "cannot connect" in one_line(err)


def test_receipt_with_a_forked_log(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    leaves = [b"a", b"b", b"c"]
    checkpoint = sign_checkpoint(Checkpoint(ORIGIN, 3, _mth(leaves)), SIGNER)
    receipt = tmp_path / "r.tlog-proof"
    receipt.write_text(
        format_receipt(Receipt(0, tuple(inclusion_path(0, leaves)), checkpoint, b"a"))
    )
    fork = sign_checkpoint(Checkpoint(ORIGIN, 3, _mth([b"a", b"b", b"x"])), SIGNER)
    with serve({"checkpoint": fork.encode()}) as (url, _):
        code, _, err = run(capsys, "receipt", str(receipt), "--vkey", SIGNER.vkey, "--log", url)
        assert code == 1 and "forked" in one_line(err) and "both have size 3" in err
