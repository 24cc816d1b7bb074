"""The fast JSON writer of submission answers equals the plain receipt objects."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from tlog.log import Appended
from tlog.receipts import receipt_dict, receipts_json
from verifier.receipt import parse_receipt

CHECKPOINT = (
    "bucket.example/logs/gurukul\n7\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n"
    "\u2014 bucket.example/logs/gurukul AbCdEfGh+signature=\n"
)

hashes = st.binary(min_size=32, max_size=32)
appended = st.builds(
    Appended,
    index=st.integers(0, 2**63),
    size=st.integers(1, 2**63),
    leaf=st.binary(max_size=600),
    leaf_hash=hashes,
    checkpoint=st.one_of(
        st.just(CHECKPOINT),
        st.text(min_size=1).map(lambda t: t.strip("\n") + "\n").filter(lambda t: t != "\n"),
    ),
    proof=st.lists(hashes, max_size=64).map(tuple),
    version=st.one_of(st.none(), st.integers(1, 2**31)),
    artifact_id=st.one_of(st.none(), st.text(max_size=40)),
    replayed=st.booleans(),
)


@settings(max_examples=300)
@given(st.lists(appended, min_size=1, max_size=8))
def test_receipts_json_equals_the_reference_objects(items: list[Appended]) -> None:
    texts = receipts_json(items)
    assert len(texts) == len(items)
    for text, a in zip(texts, items, strict=True):
        assert json.loads(text) == receipt_dict(a)


def test_batch_answer_shares_checkpoint_and_hashes_and_parses() -> None:
    shared = bytes(range(32))
    items = [
        Appended(
            index=i,
            size=7,
            leaf=b"leaf %d" % i,
            leaf_hash=bytes([i]) * 32,
            checkpoint=CHECKPOINT,
            proof=(bytes([i]) * 32, shared),
            version=1,
            artifact_id=f"doc-{i}",
        )
        for i in range(3)
    ]
    answer = json.loads("[" + ",".join(receipts_json(items)) + "]")
    for obj, a in zip(answer, items, strict=True):
        receipt = parse_receipt(obj["receipt"])
        assert receipt.index == a.index
        assert receipt.proof == a.proof
        assert receipt.extra == a.leaf
        assert receipt.checkpoint == CHECKPOINT
        assert obj["checkpoint"] == CHECKPOINT
        assert obj["artifact_id"] == a.artifact_id


@settings(max_examples=200)
@given(
    st.lists(hashes, max_size=24),
    st.lists(st.lists(st.sampled_from([bytes(32), b"\xff" * 32, bytes(range(32))]), max_size=4)),
)
def test_proofs_that_share_suffixes_are_written_whole(
    shared: list[bytes], prefixes: list[list[bytes]]
) -> None:
    # Neighbouring leaves' proofs end alike and the writer shares the text of a common
    # suffix: every proof, including one that is a suffix of another, must still come
    # out whole and in order.
    proofs = [tuple(prefix) + tuple(shared) for prefix in prefixes] + [tuple(shared), ()]
    items = [
        Appended(
            index=i,
            size=len(proofs),
            leaf=b"x",
            leaf_hash=bytes(32),
            checkpoint=CHECKPOINT,
            proof=proof,
            version=1,
            artifact_id=f'id "{i}" \u00e9',
        )
        for i, proof in enumerate(proofs)
    ]
    for text, a in zip(receipts_json(items), items, strict=True):
        obj = json.loads(text)
        assert obj == receipt_dict(a)
        assert parse_receipt(obj["receipt"]).proof == a.proof
