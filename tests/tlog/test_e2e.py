"""End to end: a real ``tlog serve`` process (uvicorn) on 127.0.0.1, driven over HTTP.

The demo is initialised by the server itself on first start, exactly as ``make serve``
does; the test reads the printed vkeys and API keys, submits, then fetches the
checkpoint, tiles and proofs and checks every one with the standalone verifier.
It also runs the README's "Try it" snippet against the server.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from verifier.checkpoint import open_checkpoint
from verifier.hashing import leaf_hash
from verifier.note import parse_vkey
from verifier.proof import verify_consistency, verify_inclusion
from verifier.receipt import verify_receipt
from verifier.tiles import decode_bundle, split_tile

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Server:
    url: str
    port: int
    keys: dict[str, str]
    vkeys: dict[str, str]
    proc: subprocess.Popen[str]
    data: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("e2e") / "data"
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tlog", "--data", str(data), "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    keys: dict[str, str] = {}
    vkeys: dict[str, str] = {}
    deadline = time.monotonic() + 60
    while len(keys) < 4:
        line = proc.stdout.readline()
        assert line or proc.poll() is None, "server exited during start-up"
        assert time.monotonic() < deadline, "server did not print its keys"
        if m := re.match(r"\s+vkey (\S+)", line):
            vkeys[m.group(1).split("+")[0].rsplit("/", 1)[-1]] = m.group(1)
        if m := re.match(r"\s+([a-z-]+): (bk_\S+)", line):
            keys[m.group(1)] = m.group(2)
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server did not answer /healthz"
        time.sleep(0.1)
    yield Server(url, port, keys, vkeys, proc, data)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def test_demo_prints_four_products(server: Server) -> None:
    assert set(server.keys) == {"ai-assistant", "ai-avatar", "gurukul", "enforcement"}
    assert set(server.vkeys) == set(server.keys)


def test_submit_fetch_and_verify(server: Server) -> None:
    auth = {"Authorization": f"Bearer {server.keys['enforcement']}"}
    key = parse_vkey(server.vkeys["enforcement"])
    with httpx.Client(base_url=server.url + "/logs/enforcement", headers=auth) as client:
        assert client.get("/key").text.strip() == server.vkeys["enforcement"]
        receipts = []
        for i in range(40):
            r = client.post(
                "/entries",
                json={
                    "artifact_type": "evidence",
                    "artifact_id": f"case-7/evidence-{i}",
                    "metadata": {"case_id": "case-7", "source": "camera"},
                    "body": base64.b64encode(f"frame {i}".encode()).decode(),
                },
            )
            assert r.status_code == 201, r.text
            receipts.append(r.json())
        for got in receipts:
            assert verify_receipt(got["receipt"], [key]).index == got["index"]
        cp = open_checkpoint(client.get("/checkpoint").text, [key], origin=key.name)
        assert cp.size == 40
        leaves = decode_bundle(client.get("/tile/entries/000.p/40").content, 40)
        hashes = split_tile(client.get("/tile/0/000.p/40").content, 40)
        assert [leaf_hash(x) for x in leaves] == hashes
        for i in (0, 17, 39):
            proof = client.get(f"/proof/inclusion?index={i}&size=40").json()["proof"]
            verify_inclusion(i, 40, hashes[i], [base64.b64decode(h) for h in proof], cp.root)
        first = open_checkpoint(receipts[9]["checkpoint"], [key])
        cons = client.get(f"/proof/consistency?old={first.size}&new=40").json()["proof"]
        verify_consistency(first.size, 40, [base64.b64decode(h) for h in cons], first.root, cp.root)
        body = client.get("/artifacts/case-7/evidence-3/body")
        assert body.content == b"frame 3"


def test_other_products_key_is_refused(server: Server) -> None:
    auth = {"Authorization": f"Bearer {server.keys['gurukul']}"}
    r = httpx.get(server.url + "/logs/enforcement/checkpoint", headers=auth)
    assert r.status_code == 403
    assert r.headers["content-type"] == "application/problem+json"


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README snippet uses curl")
def test_readme_try_it_snippet(server: Server, tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Try it", 1)[1]
    snippet = section.split("```sh", 1)[1].split("```", 1)[0]
    snippet = snippet.replace("127.0.0.1:8080", f"127.0.0.1:{server.port}")
    snippet = snippet.replace(
        ".venv/bin/tlog-verify", str(Path(sys.executable).parent / "tlog-verify")
    )
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", snippet],
        cwd=tmp_path,
        env=os.environ | {"KEY": server.keys["gurukul"]},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "bucket.example/logs/gurukul" in result.stdout
    assert (tmp_path / "entry.tlog-proof").read_text().startswith("c2sp.org/tlog-proof@v1\n")


def _verify_cli(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = os.environ | ({"TLOG_TOKEN": token} if token else {})
    return subprocess.run(
        [str(Path(sys.executable).parent / "tlog-verify"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_auditor_checks_the_live_log_then_catches_a_rewritten_leaf(
    server: Server, tmp_path: Path
) -> None:
    """tlog-verify audits the live log over HTTP, verifies a receipt online, and then
    catches one leaf rewritten directly in LMDB behind the server's back; a --state file
    from the honest run catches the rewrite too."""
    product = "ai-avatar"
    auth = {"Authorization": f"Bearer {server.keys[product]}"}
    prefix = f"{server.url}/logs/{product}"
    receipts = []
    with httpx.Client(base_url=prefix, headers=auth) as client:
        for i in range(300):  # more than one full tile and bundle
            r = client.post(
                "/entries",
                json={
                    "artifact_type": "render",
                    "metadata": {"avatar": f"a{i}", "request_id": str(i)},
                },
            )
            assert r.status_code == 201, r.text
            receipts.append(r.json())
    vkey = server.vkeys[product]
    state = tmp_path / "state.json"
    clean = _verify_cli(
        "log", prefix, "--vkey", vkey, "--state", str(state), token=server.keys[product]
    )
    assert clean.returncode == 0, clean.stderr
    assert state.exists()
    receipt_file = tmp_path / "r.tlog-proof"
    receipt_file.write_text(receipts[3]["receipt"])
    online = _verify_cli(
        "receipt", str(receipt_file), "--vkey", vkey, "--log", prefix, token=server.keys[product]
    )
    assert online.returncode == 0, online.stderr
    assert "300" in online.stdout  # still contained in today's tree

    # Rewrite leaf 7 of this log directly in LMDB (a second process may open the env).
    import json as _json

    import lmdb

    env = lmdb.open(str(server.data / "lmdb"), max_dbs=4096, subdir=True)
    try:
        meta = env.open_db(b"meta")
        with env.begin(db=meta) as txn:
            log_id = _json.loads(txn.get(f"log/{product}".encode()))["id"]
        leaves = env.open_db(f"{log_id}/leaves".encode())
        with env.begin(write=True, db=leaves) as txn:
            key = (7).to_bytes(8, "big")
            leaf = bytearray(txn.get(key))
            leaf[-1] ^= 0x01
            txn.put(key, bytes(leaf))
    finally:
        env.close()
    caught = _verify_cli("log", prefix, "--vkey", vkey, token=server.keys[product])
    assert caught.returncode == 1
    assert len(caught.stderr.strip().splitlines()) == 1
    assert "7" in caught.stderr
    again = _verify_cli(
        "log", prefix, "--vkey", vkey, "--state", str(state), token=server.keys[product]
    )
    assert again.returncode == 1
