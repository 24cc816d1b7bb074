"""bench/ungoverned_app.py: the benchmark probe's no-ops take effect, and only in its process.

The patches run in a subprocess (they are process-wide monkeypatches and must not leak
into the rest of the test session); the app is driven in process there with Starlette's
TestClient, no server and no benchmark.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.bench import BENCH

ROOT = BENCH.parent

PROBE = """
import importlib.util, sys
from pathlib import Path
spec = importlib.util.spec_from_file_location("ungoverned_app", sys.argv[1])
probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe)
probe.ungovern()

import tlog.http
from starlette.testclient import TestClient
from tlog.service import Service

service = Service.init(Path(sys.argv[2]))
assert service.store.audit_hook is None, "the per-batch audit record is still on"
_, token = service.keys.create("gurukul", frozenset({"submit", "read", "audit"}))
service.governance.halt("test: a governed service would refuse every write now")
app = tlog.http.create_app(service)
lesson = {"artifact_type": "lesson", "metadata": {"title": "t", "language": "en"},
          "body": "aGk="}
with TestClient(app) as client:
    auth = {"Authorization": f"Bearer {token}"}
    audit_before = client.get("/logs/_audit/checkpoint", headers=auth).text.split("\\n")[1]
    for _ in range(3):
        r = client.post("/logs/gurukul/entries", json=lesson, headers=auth)
        assert r.status_code == 201, (r.status_code, r.text)
    r = client.post("/logs/gurukul/entries/batch", json={"entries": [lesson] * 5},
                    headers=auth)
    assert r.status_code == 201, (r.status_code, r.text)
    audit_after = client.get("/logs/_audit/checkpoint", headers=auth).text.split("\\n")[1]
    assert audit_before == audit_after, (audit_before, audit_after)
    assert client.get("/logs/gurukul/checkpoint", headers=auth).text.split("\\n")[1] == "8"
    # Authentication and validation are the service's own.
    assert client.post("/logs/gurukul/entries", json=lesson).status_code == 401
    bad = {**lesson, "artifact_type": "song"}
    assert client.post("/logs/gurukul/entries", json=bad, headers=auth).status_code == 422
service.close()
print("ok")
"""


def test_the_probe_skips_governance_and_keeps_auth_and_validation(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(BENCH / "ungoverned_app.py"), str(tmp_path / "d")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")


def test_the_service_itself_stays_governed(tmp_path: Path) -> None:
    """Importing the probe's module changes nothing; only ungovern() patches."""
    check = (
        "import importlib.util, sys\n"
        "spec = importlib.util.spec_from_file_location('p', sys.argv[1])\n"
        "p = importlib.util.module_from_spec(spec); spec.loader.exec_module(p)\n"
        "from tlog.governance import Governance\n"
        "import tlog.http\n"
        "assert Governance.admit_write.__module__ == 'tlog.governance'\n"
        "assert tlog.http.create_app.__module__ == 'tlog.http'\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", check, str(BENCH / "ungoverned_app.py")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr[-3000:]
