"""Two search drivers sharing one PostgreSQL study storage, at the same time.

What the design allows: one driver per study. Two drivers of two studies in one storage both
finish, each with its whole budget and nothing of the other's; two drivers started at once on
one study name: one runs it, the other stops at once with one line (whichever of the "exists"
check and Optuna's unique name caught it), and no trial of the study is lost or doubled.
(``--resume`` is for a study whose driver has ended: it fails the trials left RUNNING.)
Each test runs in a new, empty schema, so the drivers are also the first to open the storage:
Optuna creates its tables check-then-create, and ``open_storage`` serialises that first open.

Needs ``NAS_TEST_POSTGRES_URL`` (``eval "$(.ci/postgres.sh)"``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy
import yaml

from nas.search import load_results

pytestmark = [pytest.mark.postgres, pytest.mark.ray, pytest.mark.slow]

POSTGRES_URL = os.environ.get("NAS_TEST_POSTGRES_URL", "").strip()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The test server's URL, in a schema of its own that no storage has opened yet."""
    if not POSTGRES_URL:
        pytest.skip('NAS_TEST_POSTGRES_URL is not set (eval "$(.ci/postgres.sh)")')
    schema = f"t_{secrets.token_hex(4)}"
    engine = sqlalchemy.create_engine(POSTGRES_URL, poolclass=sqlalchemy.pool.NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    url = sqlalchemy.make_url(POSTGRES_URL).update_query_dict(
        {"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        # best effort: a connection still open in this process must not hang the test
        with contextlib.suppress(sqlalchemy.exc.SQLAlchemyError), engine.begin() as conn:
            conn.exec_driver_sql("SET LOCAL lock_timeout = '10s'")
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        engine.dispose()


def _drivers(cfgs: list[dict[str, Any]], tmp_path: Path) -> list[tuple[int, str]]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["NAS_CACHE_DIR"] = str(tmp_path / "cache")
    procs = []
    for i, cfg in enumerate(cfgs):
        path = tmp_path / f"d{i}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "nas.cli", "search", "--config", str(path), "--no-progress"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    return [(p.wait(300), p.stderr.read().decode() if p.stderr else "") for p in procs]


def _counts(study: str, url: str) -> tuple[int, int]:
    """(trials, distinct trial numbers) stored for ``study``."""
    st = optuna.load_study(study_name=study, storage=url)
    return len(st.trials), len({t.number for t in st.trials})


def test_first_opens_of_a_new_storage_at_once_all_succeed(pg_url: str) -> None:
    """Four processes open the same new storage at one instant (each imported everything and
    waits on its stdin): every one gets the storage, none a duplicate key on Optuna's tables."""
    code = ("import sys\n"
            "from nas.search import open_storage\n"
            "print('ready', flush=True)\n"
            "sys.stdin.readline()\n"
            "open_storage(sys.argv[1])\n"
            "print('opened', flush=True)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, pg_url], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    try:
        for p in procs:
            assert p.stdout is not None, p.stderr
            assert p.stdout.readline() == "ready\n", p.stderr
        for p in procs:  # go
            assert p.stdin is not None
            p.stdin.write("\n")
            p.stdin.flush()
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0] * 4, [err[-1000:] for _, err in outs]
    assert [out for out, _ in outs] == ["opened\n"] * 4
    assert optuna.get_all_study_summaries(pg_url) == []  # the storage works, and is empty


def test_two_drivers_two_studies_one_storage(pg_url: str, make_config, tmp_path) -> None:
    tag = secrets.token_hex(3)
    names = [f"pg-a-{tag}", f"pg-b-{tag}"]
    cfgs = [make_config(objectives=["macs", "latency:cpu-1t"], checkpoint=None, data=None,
                        engine="ray", n_trials=16, workers=1, batch_size=2, study=n,
                        storage=pg_url, seed=i)
            for i, n in enumerate(names)]
    results = _drivers(cfgs, tmp_path)
    assert [code for code, _ in results] == [0, 0], [err[-1000:] for _, err in results]
    for name in names:
        res = load_results(name, pg_url)
        assert len(res.budget_trials) == 16
        assert all(t.state == "COMPLETE" for t in res.trials)
        assert _counts(name, pg_url) == (16, 16)


def test_two_drivers_one_study_one_runs_it(pg_url: str, make_config, tmp_path) -> None:
    name = f"pg-same-{secrets.token_hex(3)}"
    cfg = make_config(objectives=["macs", "latency:cpu-1t"], checkpoint=None, data=None,
                      engine="ray", n_trials=12, workers=1, batch_size=2, study=name,
                      storage=pg_url)
    results = _drivers([cfg, cfg], tmp_path)
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], [err[-1000:] for _, err in results]
    (err,) = [e for code, e in results if code == 2]
    assert err.startswith("error: "), err[-2000:]
    assert len(err.strip().splitlines()) == 1, err[-2000:]
    assert name in err
    assert "Traceback" not in err
    res = load_results(name, pg_url)
    assert len(res.budget_trials) == 12
    assert _counts(name, pg_url) == (12, 12)
