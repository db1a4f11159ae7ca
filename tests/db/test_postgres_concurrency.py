"""Three processes writing to one PostgreSQL latency database at once: no row is lost.

Needs ``NAS_TEST_POSTGRES_URL`` (``eval "$(.ci/postgres.sh)"``). The tables are shared with
the other PostgreSQL tests, so this one writes under device names of its own and drops
nothing.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from nas.db import LatencyDB
from nas.space import get_space

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

POSTGRES_URL = os.environ.get("NAS_TEST_POSTGRES_URL", "").strip()


@pytest.fixture
def pg_url() -> str:
    if not POSTGRES_URL:
        pytest.skip('NAS_TEST_POSTGRES_URL is not set (eval "$(.ci/postgres.sh)")')
    return POSTGRES_URL


def _jsonl(path: Path, n: int, seed: int) -> Path:
    # distinct within a file (an import refuses one subnet at 1.0 and 4.0 ms), shared between
    # the files (246 of 400 for two seeds): concurrent writers insert the same architectures
    archs = get_space("tiny").sample_many(n, seed=seed)
    path.write_text("".join(
        json.dumps({"arch": a.to_dict(), "latency_ms": 1.0 + i / 100, "n_runs": 5}) + "\n"
        for i, a in enumerate(archs)))
    return path


def test_three_concurrent_importers_lose_no_row(pg_url: str, tmp_path: Path) -> None:
    """Three `nas latency import` of 400 rows each into one new device at once: every
    process exits 0 and every row is stored once."""
    device = f"pg-ext-{secrets.token_hex(3)}"
    files = [_jsonl(tmp_path / f"w{i}.jsonl", 400, seed=i) for i in range(3)]
    env = {k: v for k, v in os.environ.items() if k != "NAS_DB_URL"}
    env["NAS_DEVICES_DIR"] = str(tmp_path / "devices")
    procs = [subprocess.Popen(
        [sys.executable, "-m", "nas.cli", "latency", "import", str(f), "--device", device,
         "--space", "tiny", "--db", pg_url, "--json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for f in files]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [e.decode()[-400:] for _, e in outs]
    reports = [json.loads(out) for out, _ in outs]
    assert [r["n_rows"] for r in reports] == [400, 400, 400]
    db = LatencyDB(pg_url)
    try:
        stored = db.measurements(device, "tiny")
    finally:
        db.close()
    assert len(stored) == 1200
    assert len({m.id for m in stored}) == 1200
    # and every file's latencies (1.00, 1.01, ... in each) are there
    per_file = sorted(round(m.latency_ms, 2) for m in stored)
    assert per_file == sorted(round(1.0 + i / 100, 2) for i in range(400) for _ in range(3))
