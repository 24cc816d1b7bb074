"""The writer process of ``test_crash.py`` (not a test module): appends random batches
to log ``crash`` until it is killed, reporting on stdout, one flushed line per event:

``R <size>``      the store is open (the log created if it was missing);
``P <json>``      a batch is about to be submitted: the hex of its leaves;
``A <json>``      ``append_many`` returned for it: ``{"size", "checkpoint", "entries"}``,
                  entries being ``[index, leaf hash hex]`` pairs. Only this is an
                  acknowledgement.

Usage: ``python crash_writer.py DATA_DIR SEED``
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from tlog.log import Store
from verifier.hashing import leaf_hash

ORIGIN = "bucket.example/logs/crash"


def main() -> None:
    data_dir, seed = Path(sys.argv[1]), int(sys.argv[2])
    rng = random.Random(seed)
    out = sys.stdout
    store = Store.open(data_dir)
    log = store.logs.get("crash") or store.create_log("crash", ORIGIN)
    out.write(f"R {log.size}\n")
    out.flush()
    while True:
        # At least 16 random bytes per leaf, so no two leaves are equal (no dedup).
        batch = [rng.randbytes(rng.randint(16, 80)) for _ in range(rng.randint(1, 120))]
        out.write("P " + json.dumps([leaf.hex() for leaf in batch]) + "\n")
        out.flush()
        got = log.append_many(batch)
        entries = [[i, leaf_hash(leaf).hex()] for i, leaf in zip(got.indexes, batch, strict=True)]
        ack = {"size": got.size, "checkpoint": got.checkpoint, "entries": entries}
        out.write("A " + json.dumps(ack) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
