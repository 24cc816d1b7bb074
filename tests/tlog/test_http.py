"""The HTTP API through Starlette's test client, on a real data directory.

Every receipt and proof the API hands out is checked with the standalone verifier;
every refusal is checked for its status, its problem ``code`` and for leaving the
tree exactly as it was.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
from starlette.testclient import TestClient

from tests.reference import consistency_proof, inclusion_path, mth
from tlog.http import create_app
from tlog.service import Service
from verifier.checkpoint import open_checkpoint
from verifier.hashing import leaf_hash
from verifier.note import parse_vkey
from verifier.proof import verify_consistency, verify_inclusion
from verifier.receipt import verify_receipt
from verifier.tiles import decode_bundle, split_tile

CONFIG = """
[service]
host = "test.example"

[limits]
max_artifact_bytes = 1024
max_request_bytes = 8192
max_batch_items = 50

[products.alpha]
[products.alpha.artifact_types.doc]
required_metadata = ["title"]
[products.alpha.artifact_types.note]

[products.beta]
public = true
[products.beta.artifact_types.doc]
required_metadata = ["title"]

[products.gamma]
[products.gamma.artifact_types.doc]

[products.delta]
[products.delta.artifact_types.doc]
"""


class Env:
    """A service, its test client and one API key per product and scope set."""

    def __init__(self, tmp: Path) -> None:
        cfg = tmp / "config.toml"
        cfg.write_text(CONFIG)
        self.service = Service.init(tmp / "data", config_path=cfg)
        self.client = TestClient(create_app(self.service), raise_server_exceptions=True)
        self.keys: dict[str, str] = {}
        for product in self.service.config.products:
            _, self.keys[product] = self.service.keys.create(product, {"submit", "read"})
        _, self.read_only = self.service.keys.create("alpha", {"read"})
        _, self.submit_only = self.service.keys.create("alpha", {"submit"})

    def auth(self, product: str = "alpha", token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.keys[product]}"}

    def submit(self, product: str = "alpha", **fields: Any) -> Any:
        payload = {"artifact_type": "doc", "metadata": {"title": "t"}} | fields
        return self.client.post(
            f"/logs/{product}/entries", json=payload, headers=self.auth(product)
        )

    def size(self, product: str = "alpha") -> int:
        return self.service.product_log(product).size

    def vkey(self, product: str = "alpha") -> str:
        r = self.client.get(f"/logs/{product}/key", headers=self.auth(product))
        assert r.status_code == 200
        return r.text.strip()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    with e.client:
        yield e
    e.service.close()


def _b64(raw: str) -> bytes:
    return base64.b64decode(raw)


def test_submit_returns_a_receipt_that_verifies_offline(env: Env) -> None:
    r = env.submit(artifact_id="a/1", body=base64.b64encode(b"hello").decode())
    assert r.status_code == 201, r.text
    got = r.json()
    assert (got["index"], got["tree_size"], got["version"], got["artifact_id"]) == (0, 1, 1, "a/1")
    key = parse_vkey(env.vkey())
    proven = verify_receipt(got["receipt"], [key], origin="test.example/logs/alpha")
    assert proven.index == 0 and proven.leaf == _b64(got["leaf"])
    assert _b64(got["leaf_hash"]) == leaf_hash(_b64(got["leaf"]))
    cp = open_checkpoint(got["checkpoint"], [key])
    verify_inclusion(0, cp.size, leaf_hash(_b64(got["leaf"])), [], cp.root)
    entry = env.client.get("/logs/alpha/entries/0", headers=env.auth()).json()["entry"]
    assert entry["body_sha256"] == hashlib.sha256(b"hello").hexdigest()
    assert entry["principal"].startswith("key:") and entry["product"] == "alpha"


def test_cbor_submission(env: Env) -> None:
    payload = cbor2.dumps({"artifact_type": "note", "body": b"\x00\x01binary"})
    r = env.client.post(
        "/logs/alpha/entries",
        content=payload,
        headers=env.auth() | {"Content-Type": "application/cbor"},
    )
    assert r.status_code == 201, r.text
    body = env.client.get(
        f"/logs/alpha/artifacts/{r.json()['artifact_id']}/body", headers=env.auth()
    )
    assert body.content == b"\x00\x01binary"


def test_versions_chain_and_nothing_is_overwritten(env: Env) -> None:
    first = env.submit(artifact_id="doc-1", body=base64.b64encode(b"v1").decode()).json()
    env.submit(artifact_id="other")
    second = env.submit(artifact_id="doc-1", body=base64.b64encode(b"v2").decode()).json()
    assert (first["version"], second["version"]) == (1, 2)
    entry = env.client.get(f"/logs/alpha/entries/{second['index']}", headers=env.auth()).json()
    assert entry["entry"]["prev_index"] == first["index"]
    versions = env.client.get("/logs/alpha/artifacts/doc-1", headers=env.auth()).json()
    assert versions["versions"] == [
        {"version": 1, "index": first["index"]},
        {"version": 2, "index": second["index"]},
    ]
    v1 = env.client.get("/logs/alpha/artifacts/doc-1/body?version=1", headers=env.auth())
    latest = env.client.get("/logs/alpha/artifacts/doc-1/body", headers=env.auth())
    assert (v1.content, latest.content) == (b"v1", b"v2")
    assert (
        env.client.get("/logs/alpha/entries/0", headers=env.auth()).json()["leaf"] == first["leaf"]
    )


def test_idempotency_key(env: Env) -> None:
    headers = env.auth() | {"Idempotency-Key": "req-1"}
    payload = {"artifact_type": "doc", "metadata": {"title": "t"}}
    first = env.client.post("/logs/alpha/entries", json=payload, headers=headers)
    again = env.client.post("/logs/alpha/entries", json=payload, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["index"] == first.json()["index"]
    assert again.json()["artifact_id"] == first.json()["artifact_id"]
    other = env.client.post(
        "/logs/alpha/entries", json=payload | {"metadata": {"title": "u"}}, headers=headers
    )
    assert other.status_code == 409 and other.json()["code"] == "conflict"
    assert env.size() == 1


def test_a_batch_refused_at_sequencing_writes_nothing(env: Env) -> None:
    items = [
        {"artifact_type": "doc", "artifact_id": "ok-1", "metadata": {"title": "t"}},
        {"artifact_type": "doc", "artifact_id": "new-2", "metadata": {"title": "t"}},
        {
            "artifact_type": "doc",
            "artifact_id": "new-3",
            "metadata": {"title": "t"},
            "expected_version": 5,
        },
    ]
    r = env.client.post("/logs/alpha/entries/batch", json=items, headers=env.auth())
    assert r.status_code == 409 and r.json()["code"] == "version_conflict", r.text
    assert r.json()["detail"].startswith("entries[2]: ")
    assert env.size() == 0
    for artifact in ("ok-1", "new-2"):
        got = env.client.get(f"/logs/alpha/artifacts/{artifact}", headers=env.auth())
        assert got.status_code == 404
    # The corrected request then writes each item once, as version 1.
    items[2]["expected_version"] = 0
    r = env.client.post("/logs/alpha/entries/batch", json=items, headers=env.auth())
    assert r.status_code == 201, r.text
    assert [x["version"] for x in r.json()["receipts"]] == [1, 1, 1]
    assert env.size() == 3


def test_idempotency_keys_are_per_api_key(env: Env) -> None:
    # Two API keys of one product are two principals: the same Idempotency-Key from the
    # other one is its own request, neither a replay of ours nor a 409 that betrays it.
    payload = {"artifact_type": "doc", "metadata": {"title": "t"}}
    mine = env.auth() | {"Idempotency-Key": "1"}
    theirs = env.auth(token=env.submit_only) | {"Idempotency-Key": "1"}
    a = env.client.post("/logs/alpha/entries", json=payload, headers=mine)
    b = env.client.post("/logs/alpha/entries", json=payload, headers=theirs)
    c = env.client.post(
        "/logs/alpha/entries", json=payload | {"metadata": {"title": "u"}}, headers=theirs
    )
    assert (a.status_code, b.status_code, c.status_code) == (201, 201, 409)
    assert (a.json()["index"], b.json()["index"]) == (0, 1)
    again = env.client.post("/logs/alpha/entries", json=payload, headers=theirs)
    assert (again.status_code, again.json()["index"]) == (200, 1)
    assert env.size() == 2


def test_artifact_ids_beyond_the_index_key_limit(env: Env) -> None:
    long_id = "\N{GRINNING FACE}" * 256  # 256 characters, 1,024 bytes of UTF-8
    r = env.submit(artifact_id=long_id)
    assert r.status_code == 422 and r.json()["code"] == "invalid_entry", r.text
    assert "bytes of UTF-8" in r.json()["detail"]
    assert env.size() == 0
    for path in (f"/logs/alpha/artifacts/{long_id}", f"/logs/alpha/artifacts/{long_id}/body"):
        got = env.client.get(path, headers=env.auth())
        assert got.status_code == 404 and got.json()["code"] == "not_found", got.text
    r = env.submit(artifact_id="a/b/body")  # GET .../artifacts/a/b/body is a/b's body
    assert r.status_code == 422 and "/body" in r.json()["detail"]
    at_limit = "\N{GRINNING FACE}" * 125  # 500 bytes
    assert env.submit(artifact_id=at_limit).status_code == 201
    got = env.client.get(f"/logs/alpha/artifacts/{at_limit}", headers=env.auth())
    assert got.status_code == 200 and got.json()["versions"] == [{"version": 1, "index": 0}]


def test_batch_submission(env: Env) -> None:
    items = [{"artifact_type": "doc", "metadata": {"title": str(i)}} for i in range(20)]
    r = env.client.post("/logs/alpha/entries/batch", json=items, headers=env.auth())
    assert r.status_code == 201, r.text
    receipts = r.json()["receipts"]
    assert sorted(x["index"] for x in receipts) == list(range(20))
    key = parse_vkey(env.vkey())
    for x in receipts:
        assert verify_receipt(x["receipt"], [key]).index == x["index"]


def test_batch_with_one_bad_item_writes_nothing(env: Env) -> None:
    items = [{"artifact_type": "doc", "metadata": {"title": "ok"}}, {"artifact_type": "doc"}]
    r = env.client.post("/logs/alpha/entries/batch", json=items, headers=env.auth())
    assert r.status_code == 422 and "entries[1]" in r.json()["detail"]
    assert env.size() == 0


def test_reads_match_the_reference_and_verify(env: Env) -> None:
    leaves = []
    for i in range(300):
        leaves.append(_b64(env.submit(artifact_id=f"x{i}").json()["leaf"]))
    key = parse_vkey(env.vkey())
    r = env.client.get("/logs/alpha/checkpoint", headers=env.auth())
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.headers["cache-control"] == "no-store"
    cp = open_checkpoint(r.text, [key], origin="test.example/logs/alpha")
    assert cp.size == 300 and cp.root == mth(leaves)

    full = env.client.get("/logs/alpha/tile/0/000", headers=env.auth())
    assert full.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert split_tile(full.content, 256) == [leaf_hash(x) for x in leaves[:256]]
    partial = env.client.get("/logs/alpha/tile/0/001.p/44", headers=env.auth())
    assert split_tile(partial.content, 44) == [leaf_hash(x) for x in leaves[256:]]
    bundle = env.client.get("/logs/alpha/tile/entries/000", headers=env.auth())
    assert decode_bundle(bundle.content, 256) == leaves[:256]
    level1 = env.client.get("/logs/alpha/tile/1/000.p/1", headers=env.auth())
    assert level1.content == mth(leaves[:256])
    for bad in ("tile/0/001", "tile/0/001.p/45", "tile/1/000", "tile/0/1", "tile/entries/002"):
        assert env.client.get(f"/logs/alpha/{bad}", headers=env.auth()).status_code == 404

    proof = env.client.get("/logs/alpha/proof/inclusion?index=7&size=200", headers=env.auth())
    assert [_b64(h) for h in proof.json()["proof"]] == inclusion_path(7, leaves[:200])
    by_hash = env.client.get(
        "/logs/alpha/proof/inclusion",
        params={"leaf_hash": base64.b64encode(leaf_hash(leaves[9])).decode(), "size": 300},
        headers=env.auth(),
    ).json()
    assert by_hash["index"] == 9
    verify_inclusion(9, 300, leaf_hash(leaves[9]), [_b64(h) for h in by_hash["proof"]], cp.root)
    cons = env.client.get("/logs/alpha/proof/consistency?old=123&new=300", headers=env.auth())
    hashes = [_b64(h) for h in cons.json()["proof"]]
    assert hashes == consistency_proof(123, leaves)
    verify_consistency(123, 300, hashes, mth(leaves[:123]), cp.root)

    receipt = env.client.get("/logs/alpha/receipts/5?size=100", headers=env.auth())
    proven = verify_receipt(receipt.text, [key])
    assert (proven.index, proven.size, proven.leaf) == (5, 100, leaves[5])


def test_auth_and_isolation(env: Env) -> None:
    env.submit()
    assert env.client.get("/logs/alpha/checkpoint").status_code == 401
    bad = env.client.get("/logs/alpha/checkpoint", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and bad.json()["code"] == "unauthorized"
    forged = env.keys["alpha"][:-4] + "AAAA"
    assert (
        env.client.get("/logs/alpha/checkpoint", headers=env.auth(token=forged)).status_code == 401
    )
    cross = env.client.get("/logs/alpha/entries/0", headers=env.auth("gamma"))
    assert cross.status_code == 403 and cross.json()["code"] == "forbidden"
    cross_write = env.client.post(
        "/logs/alpha/entries", json={"artifact_type": "doc"}, headers=env.auth("gamma")
    )
    assert cross_write.status_code == 403
    assert env.size() == 1
    metrics = env.client.get("/metrics").text
    assert 'tlog_access_denied_total{reason="cross_product"} 2.0' in metrics
    # Scopes.
    write_with_read_key = env.client.post(
        "/logs/alpha/entries",
        json={"artifact_type": "doc", "metadata": {"title": "t"}},
        headers=env.auth(token=env.read_only),
    )
    assert write_with_read_key.status_code == 403
    read_with_submit_key = env.client.get(
        "/logs/alpha/checkpoint", headers=env.auth(token=env.submit_only)
    )
    assert read_with_submit_key.status_code == 403
    # Revocation takes effect at once.
    key_id = env.read_only.split("_")[1]
    env.service.keys.revoke(key_id)
    assert (
        env.client.get("/logs/alpha/checkpoint", headers=env.auth(token=env.read_only)).status_code
        == 401
    )


def test_public_product_reads_without_a_key(env: Env) -> None:
    env.submit("beta")
    assert env.client.get("/logs/beta/checkpoint").status_code == 200
    assert env.client.get("/logs/beta/tile/0/000.p/1").status_code == 200
    assert env.client.get("/logs/beta/key").status_code == 200
    # Entries, proofs and writes still need a key.
    assert env.client.get("/logs/beta/entries/0").status_code == 401
    assert env.client.post("/logs/beta/entries", json={}).status_code == 401


def test_a_public_read_needs_no_scope_even_with_a_key(env: Env) -> None:
    env.submit("beta")
    _, submit_only = env.service.keys.create("beta", {"submit"})
    for _ in range(6):  # five scope violations would freeze the key
        r = env.client.get("/logs/beta/checkpoint", headers=env.auth(token=submit_only))
        assert r.status_code == 200, r.text
    assert env.client.get("/logs/beta/key", headers=env.auth(token=submit_only)).status_code == 200
    assert env.submit("beta", **{}).status_code == 201
    r = env.client.post(
        "/logs/beta/entries",
        json={"artifact_type": "doc", "metadata": {"title": "t"}},
        headers=env.auth(token=submit_only),
    )
    assert r.status_code == 201, r.text  # not frozen
    # Another product's key is still refused on a public product's paths.
    assert env.client.get("/logs/beta/checkpoint", headers=env.auth("alpha")).status_code == 403
    # A non-public read still needs its scope.
    assert (
        env.client.get("/logs/beta/entries/0", headers=env.auth(token=submit_only)).status_code
        == 403
    )


def test_unknown_paths_are_404_and_not_recorded(env: Env) -> None:
    audit = env.service.governance.audit
    before = audit.size
    for method, path in [("GET", "/favicon.ico"), ("GET", "/logs/alpha/nothing"), ("POST", "/x/y")]:
        r = env.client.request(method, path, headers=env.auth())
        assert r.status_code == 404 and r.json()["code"] == "not_found", (method, path, r.text)
    assert audit.size == before
    # A real path with a method it does not take is still 405 (and recorded), not 404.
    for method, path in [("POST", "/logs/alpha/checkpoint"), ("GET", "/logs/alpha/entries")]:
        r = env.client.request(method, path, headers=env.auth())
        assert r.status_code == 405, (method, path, r.text)
    for method in ("OPTIONS", "FOO"):
        assert env.client.request(method, "/nope", headers=env.auth()).status_code == 404
    assert audit.size == before + 2  # the two 405s, and only they, were recorded
    # Writing to the audit log: 401 without a key (before the 403 with one).
    assert env.client.post("/logs/_audit/entries", json={}).status_code == 401
    assert env.client.post("/logs/_audit/entries", json={}, headers=env.auth()).status_code == 403


@pytest.mark.parametrize(
    "path",
    [
        "/logs/alpha/entries/\N{SUPERSCRIPT TWO}",
        "/logs/alpha/entries/\N{ARABIC-INDIC DIGIT ONE}",
        "/logs/alpha/receipts/\N{SUPERSCRIPT ONE}",
        "/logs/alpha/proof/inclusion?index=%C2%B2&size=1",
        "/logs/alpha/proof/consistency?old=1&new=%C2%B3",
        "/logs/alpha/receipts/0?size=%D9%A1",
    ],
)
def test_numbers_are_ascii_digits_only(env: Env, path: str) -> None:
    env.submit()
    env.submit()
    r = env.client.get(path, headers=env.auth())
    assert r.status_code in (400, 404) and r.headers["content-type"] == "application/problem+json"


def test_latest_body_is_not_cached_as_immutable(env: Env) -> None:
    env.submit(artifact_id="x", body=base64.b64encode(b"v1").decode())
    latest = env.client.get("/logs/alpha/artifacts/x/body", headers=env.auth())
    pinned = env.client.get("/logs/alpha/artifacts/x/body?version=1", headers=env.auth())
    assert latest.content == pinned.content == b"v1"
    assert latest.headers["cache-control"] == "private, no-cache"
    assert pinned.headers["cache-control"] == "private, max-age=31536000, immutable"


def test_request_metrics_do_not_label_arbitrary_methods(env: Env) -> None:
    for method in ("XYZ1", "XYZ2"):
        env.client.request(method, "/logs/alpha/checkpoint", headers=env.auth())
    text = env.client.get("/metrics").text
    assert "XYZ" not in text
    assert 'method="other"' in text


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize(
    "path", ["/logs/alpha/entries/0", "/logs/alpha/entries", "/logs/alpha/checkpoint", "/x"]
)
def test_mutations_are_refused(env: Env, method: str, path: str) -> None:
    env.submit()
    r = env.client.request(method, path, headers=env.auth())
    assert r.status_code == 405
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "append_only" and "append-only" in r.json()["detail"]
    assert env.size() == 1


def _post(env: Env, content: bytes, ctype: str = "application/json", path: str = "entries") -> Any:
    return env.client.post(
        f"/logs/alpha/{path}", content=content, headers=env.auth() | {"Content-Type": ctype}
    )


def _chunked(env: Env, total: int) -> Any:
    def gen() -> Iterator[bytes]:
        for _ in range(total // 1000):
            yield b" " * 1000

    return env.client.post(
        "/logs/alpha/entries",
        content=gen(),
        headers=env.auth() | {"Content-Type": "application/json"},
    )


def _doc(**extra: Any) -> bytes:
    return json.dumps({"artifact_type": "doc", "metadata": {"title": "t"}} | extra).encode()


BAD_INPUTS: list[tuple[str, Any, int, str]] = [
    ("body over the request limit", lambda e: _post(e, b" " * 9000), 413, "payload_too_large"),
    ("chunked body over the limit", lambda e: _chunked(e, 20000), 413, "payload_too_large"),
    (
        "artifact over the size limit",
        lambda e: _post(e, _doc(body=base64.b64encode(b"x" * 1025).decode())),
        413,
        "payload_too_large",
    ),
    ("wrong content type", lambda e: _post(e, _doc(), "text/plain"), 415, "unsupported_media_type"),
    ("no content type", lambda e: _post(e, _doc(), ""), 415, "unsupported_media_type"),
    ("malformed JSON", lambda e: _post(e, b'{"artifact_type": '), 400, "bad_request"),
    ("duplicate JSON key", lambda e: _post(e, b'{"a": 1, "a": 2}'), 400, "bad_request"),
    ("NaN in JSON", lambda e: _post(e, b'{"artifact_type": NaN}'), 400, "bad_request"),
    ("malformed CBOR", lambda e: _post(e, b"\xa1\x61", "application/cbor"), 400, "bad_request"),
    (
        "CBOR with a tag",
        lambda e: _post(e, cbor2.dumps(cbor2.CBORTag(1, 0)), "application/cbor"),
        400,
        "bad_request",
    ),
    ("not an object", lambda e: _post(e, b"[1, 2]"), 422, "invalid_entry"),
    ("unknown field", lambda e: _post(e, _doc(owner="someone")), 422, "unknown_field"),
    (
        "missing required metadata",
        lambda e: _post(e, b'{"artifact_type": "doc"}'),
        422,
        "invalid_entry",
    ),
    (
        "unknown artifact type",
        lambda e: _post(e, b'{"artifact_type": "song"}'),
        422,
        "invalid_entry",
    ),
    ("bad base64 body", lambda e: _post(e, _doc(body="***")), 422, "invalid_entry"),
    ("control char in id", lambda e: _post(e, _doc(artifact_id="a\x01b")), 422, "invalid_entry"),
    ("id too long", lambda e: _post(e, _doc(artifact_id="a" * 257)), 422, "invalid_entry"),
    (
        "metadata nested too deep",
        lambda e: _post(e, _doc(metadata={"title": "t", "x": _nest(20)})),
        422,
        "invalid_entry",
    ),
    ("empty batch", lambda e: _post(e, b"[]", path="entries/batch"), 422, "invalid_entry"),
    (
        "batch over the item limit",
        lambda e: _post(e, json.dumps([{}] * 51).encode(), path="entries/batch"),
        413,
        "payload_too_large",
    ),
    (
        "bad Idempotency-Key",
        lambda e: e.client.post(
            "/logs/alpha/entries",
            content=_doc(),
            headers=e.auth() | {"Content-Type": "application/json", "Idempotency-Key": "x" * 201},
        ),
        400,
        "bad_request",
    ),
    (
        "unknown product",
        lambda e: e.client.get("/logs/nope/checkpoint", headers=e.auth()),
        404,
        "not_found",
    ),
    (
        "unknown index",
        lambda e: e.client.get("/logs/alpha/entries/5", headers=e.auth()),
        404,
        "not_found",
    ),
    (
        "non-numeric index",
        lambda e: e.client.get("/logs/alpha/entries/x", headers=e.auth()),
        404,
        "not_found",
    ),
    (
        "size beyond the tree",
        lambda e: e.client.get("/logs/alpha/proof/inclusion?index=0&size=9", headers=e.auth()),
        400,
        "bad_request",
    ),
    (
        "index outside the size",
        lambda e: e.client.get("/logs/alpha/proof/inclusion?index=1&size=1", headers=e.auth()),
        400,
        "bad_request",
    ),
    (
        "consistency beyond the tree",
        lambda e: e.client.get("/logs/alpha/proof/consistency?old=1&new=7", headers=e.auth()),
        400,
        "bad_request",
    ),
    (
        "negative size",
        lambda e: e.client.get("/logs/alpha/proof/consistency?old=-1&new=1", headers=e.auth()),
        400,
        "bad_request",
    ),
    (
        "receipt for an unpublished size",
        lambda e: e.client.get("/logs/alpha/receipts/0?size=0", headers=e.auth()),
        400,
        "bad_request",
    ),
    (
        "unknown artifact",
        lambda e: e.client.get("/logs/alpha/artifacts/zz", headers=e.auth()),
        404,
        "not_found",
    ),
]


def _nest(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("name", "call", "status", "code"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS]
)
def test_bad_input_is_refused_and_changes_nothing(
    env: Env, name: str, call: Any, status: int, code: str
) -> None:
    env.submit()
    before = env.client.get("/logs/alpha/checkpoint", headers=env.auth()).text
    r = call(env)
    assert r.status_code == status, (name, r.text)
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["code"] == code and problem["status"] == status and problem["detail"]
    assert env.size() == 1
    assert env.client.get("/logs/alpha/checkpoint", headers=env.auth()).text == before


def test_four_products_concurrently_and_isolated(env: Env) -> None:
    products = ["alpha", "beta", "gamma", "delta"]
    errors: list[str] = []

    def worker(product: str) -> None:
        for i in range(25):
            r = env.submit(product, artifact_id=f"{product}-{i}")
            if r.status_code != 201:
                errors.append(r.text)

    threads = [threading.Thread(target=worker, args=(p,)) for p in products]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for product in products:
        assert env.size(product) == 25
        bundle = env.client.get(f"/logs/{product}/tile/entries/000.p/25", headers=env.auth(product))
        ids = {cbor2.loads(leaf)["artifact_id"] for leaf in decode_bundle(bundle.content, 25)}
        assert ids == {f"{product}-{i}" for i in range(25)}
        assert {cbor2.loads(leaf)["product"] for leaf in decode_bundle(bundle.content, 25)} == {
            product
        }


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def test_metrics_and_health(env: Env) -> None:
    before = env.client.get("/metrics").text
    env.submit()
    env.client.get("/logs/alpha/checkpoint", headers=env.auth())
    assert env.client.get("/healthz").json() == {"status": "ok"}
    text = env.client.get("/metrics").text
    route = 'tlog_http_requests_total{method="POST",route="/logs/{product}/entries",status="201"}'
    assert _metric(text, route) == 1.0
    assert _metric(text, 'tlog_tree_size{log="alpha"}') == 1.0
    assert _metric(text, 'tlog_appends_total{log="alpha"}') == 1.0
    for name in ("tlog_batch_items_count", "tlog_integration_seconds_count"):
        assert _metric(text, name) == _metric(before, name) + 1
    assert _metric(text, "tlog_pending_writes") == 0.0
