"""One driver per study, on every storage and both engines (nas.search._lease).

Two real drivers of one study: the first, a ``nas search`` subprocess, holds the study's lease;
a second ``nas search --resume`` is refused at once in one line naming the study and the
holder, and changes nothing stored; after a SIGKILL of the first, ``--resume`` takes over and
stores the whole budget, no subnet twice. The lease is one mechanism in the storage layer, so
the predictor engine (fast) covers journal, SQLite and PostgreSQL, the Ray engine the journal,
and one test shows both engines take the lease through the same call.

No test races the other process: the first driver is held at a known point after taking its
lease and writing its configuration (its stderr is a pipe already full, so its first line, the
one that says which engine runs, blocks it until it is killed), and each test waits for what
it can observe in the storage.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest

from nas.errors import ConfigError
from nas.search import SearchConfig, load_results, open_storage, run_search
from nas.search._lease import (
    BEAT_PREFIX,
    LEASE_KEY,
    LEASE_TIMEOUT_S,
    Holder,
    acquire_lease,
    lease_holder,
)
from nas.search._study import open_study

pytestmark = [pytest.mark.slow]

POSTGRES_URL = os.environ.get("NAS_TEST_POSTGRES_URL", "").strip()
PREDICTOR = ["--space", "tiny", "-O", "macs", "-O", "params", "--engine", "predictor",
             "--generations", "40", "--n-trials", "30"]


@pytest.fixture(params=["journal", "sqlite", pytest.param("postgres",
                                                          marks=pytest.mark.postgres)])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A new storage of each kind (PostgreSQL: a schema of its own)."""
    if request.param == "journal":
        yield str(tmp_path / "studies.journal")
    elif request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'studies.sqlite'}"
    else:
        yield from _pg_schema()


def _pg_schema() -> Iterator[str]:
    if not POSTGRES_URL:
        pytest.skip('NAS_TEST_POSTGRES_URL is not set (eval "$(.ci/postgres.sh)")')
    import sqlalchemy

    schema = f"t_{secrets.token_hex(4)}"
    engine = sqlalchemy.create_engine(POSTGRES_URL, poolclass=sqlalchemy.pool.NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    url = sqlalchemy.make_url(POSTGRES_URL).update_query_dict(
        {"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with contextlib.suppress(sqlalchemy.exc.SQLAlchemyError), engine.begin() as conn:
            conn.exec_driver_sql("SET LOCAL lock_timeout = '10s'")
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        engine.dispose()


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["NAS_CACHE_DIR"] = str(tmp_path / "cache")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _full_pipe() -> tuple[int, int]:
    """A pipe whose buffer is full: a process writing to it blocks until it is read."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    for size in (4096, 1):
        with contextlib.suppress(BlockingIOError):
            while True:
                os.write(w, b"x" * size)
    os.set_blocking(w, True)
    return r, w


def _wait_for(what: str, check: Callable[[], Any], proc: subprocess.Popen[bytes],
              deadline_s: float = 180) -> Any:
    """Poll ``check()`` until it returns something true (the driver must stay alive)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the first driver ended ({proc.returncode}) before {what}"
        with contextlib.suppress(KeyError, ConfigError):
            found = check()
            if found:
                return found
        time.sleep(0.05)
    raise AssertionError(f"no {what} after {deadline_s} s")


def _holder(study: str, url: str) -> Holder | None:
    return lease_holder(open_storage(url, create=False), study)


def _snapshot(study: str, url: str) -> tuple[Any, ...]:
    """What a refused driver must not change: the trials, the user attributes, the lease."""
    st = optuna.load_study(study_name=study, storage=open_storage(url, create=False))
    trials = [(t.number, t.state.name, t.values, t.user_attrs.get("arch_hash"))
              for t in st.get_trials(deepcopy=False)]
    lease = st._storage.get_study_system_attrs(st._study_id).get(LEASE_KEY)
    return trials, json.dumps(st.user_attrs, sort_keys=True), lease


def _assert_refused(code: int, err: str, study: str, holder_pid: int) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert repr(study) in lines[0]
    assert f"host {socket.gethostname()}, pid {holder_pid}, since " in lines[0]


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(60)


def _refused_then_killed(args: list[str], study: str, url: str, tmp_path: Path,
                         run_nas) -> None:
    """Start ``nas search ARGS`` (the first driver), hold it at its first line, check that a
    second driver is refused and changes nothing, then SIGKILL the first."""
    where = ["--study", study, "--storage", url]
    r, w = _full_pipe()
    first = subprocess.Popen(
        [sys.executable, "-m", "nas.cli", "search", *args, *where, "--no-progress"],
        env=_env(tmp_path), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=w,
        start_new_session=True)
    os.close(w)
    try:
        # the lease, then the study's configuration: the first is at its first line
        holder = _wait_for("lease", lambda: _holder(study, url), first)
        assert holder.pid == first.pid
        _wait_for("configuration", lambda: "nas_version" in optuna.load_study(
            study_name=study, storage=open_storage(url)).user_attrs, first)
        before = _snapshot(study, url)
        code, _, err = run_nas(["search", *where, "--resume", "--no-progress"])
        _assert_refused(code, err, study, first.pid)
        assert _snapshot(study, url) == before  # nothing stored changed
        assert first.poll() is None  # the first still runs
    finally:
        _kill(first)
        os.close(r)
    assert first.returncode == -signal.SIGKILL
    assert load_results(study, url).trials == []  # killed before it stored any


def test_predictor_engine_second_driver_refused_then_resume_takes_over(
        storage_url: str, tmp_path: Path, run_nas) -> None:
    study = f"lease-{secrets.token_hex(3)}"
    _refused_then_killed(PREDICTOR, study, storage_url, tmp_path, run_nas)

    code, out, err = run_nas(["search", "--study", study, "--storage", storage_url,
                              "--resume", "--no-progress", "--json"])
    assert code == 0, err
    assert json.loads(out)["n_trials"] == 30
    res = load_results(study, storage_url)
    hashes = [t.arch_hash for t in res.trials]
    assert len(hashes) == 30
    assert len(set(hashes)) == 30  # no subnet stored twice
    assert all(t.state == "COMPLETE" for t in res.trials)
    assert _holder(study, storage_url) is None  # given back at the end


def test_predictor_resume_after_a_kill_mid_store_adds_only_what_is_missing(
        tmp_path: Path) -> None:
    """A driver killed while it stored its trials (part of them stored, the record of the
    run not yet): --resume searches again from the seed and adds only the rest."""
    base = {"space": "tiny", "objectives": ["macs", "params"], "engine": "predictor",
            "generations": 40, "n_trials": 30, "study": "s"}
    full = run_search(SearchConfig.model_validate(
        {**base, "storage": str(tmp_path / "full.journal")}), progress=False)
    cut = SearchConfig.model_validate({**base, "storage": str(tmp_path / "cut.journal")})
    storage = open_storage(cut.storage_url)
    study, _, lease = open_study(cut, storage, resume=False, predictor_info={})
    lease.release()
    done = optuna.load_study(study_name="s",
                             storage=open_storage(str(tmp_path / "full.journal")))
    study.add_trials(done.get_trials()[:12])  # what the killed driver had stored

    res = run_search(cut, resume=True, progress=False)
    hashes = [t.arch_hash for t in res.trials]
    assert len(hashes) == 30
    assert len(set(hashes)) == 30
    assert set(hashes) == {t.arch_hash for t in full.trials}


def _stored_config(tmp_path: Path, engine: str) -> SearchConfig:
    """A study of ``engine`` created in a journal by the library, its lease given back."""
    extra = ({"generations": 20} if engine == "predictor"
             else {"workers": 1, "batch_size": 1})
    cfg = SearchConfig.model_validate({
        "space": "tiny", "objectives": ["macs", "params"], "engine": engine, "n_trials": 8,
        "study": f"one-call-{engine}", "storage": str(tmp_path / f"{engine}.journal"), **extra})
    storage = open_storage(cfg.storage_url)
    _, stored, lease = open_study(cfg, storage, resume=False, predictor_info={})
    lease.release()
    return stored


def test_both_engines_take_the_lease_through_one_call(tmp_path: Path) -> None:
    """A study whose lease is held (here, by this process through ``acquire_lease``) is
    refused by both engines alike; with a holder on another machine, a fresh heartbeat
    refuses and one older than the timeout is taken over."""
    for engine in ("predictor", "ray"):
        cfg = _stored_config(tmp_path, engine)
        storage = open_storage(cfg.storage_url)
        held = acquire_lease(storage, cfg.study_name, cfg.storage_url)
        try:
            with pytest.raises(ConfigError) as info:
                run_search(cfg, resume=True, progress=False)
        finally:
            held.release()
        assert f"pid {os.getpid()}, since {held.holder.since}" in str(info.value)
        assert repr(cfg.study_name) in str(info.value)

    cfg = _stored_config(tmp_path / "elsewhere", "predictor")
    storage = open_storage(cfg.storage_url)
    study_id = storage.get_study_id_from_name(cfg.study_name)
    other = Holder(token="0123456789abcdef", host="another-machine", pid=4242,
                   since="2026-01-01T00:00:00+00:00", boot="another-boot")
    storage.set_study_system_attr(study_id, LEASE_KEY, other.__dict__)
    storage.set_study_system_attr(study_id, BEAT_PREFIX + other.token, time.time())
    with pytest.raises(ConfigError, match="host another-machine, pid 4242"):
        run_search(cfg, resume=True, progress=False)
    storage.set_study_system_attr(study_id, BEAT_PREFIX + other.token,
                                  time.time() - LEASE_TIMEOUT_S - 5)
    res = run_search(cfg, resume=True, progress=False)  # its heartbeat stopped: taken over
    assert len(res.trials) == 8
    assert lease_holder(open_storage(cfg.storage_url), cfg.study_name) is None


@pytest.mark.ray
def test_ray_engine_second_driver_refused_then_resume_takes_over(
        storage_url: str, tmp_path: Path, run_nas) -> None:
    """The same on the Ray engine, on each storage (a driver killed with trials in flight is
    ``test_search_ray.py::test_resume_after_a_killed_driver_repeats_nothing``, whose resume
    takes the dead driver's lease over)."""
    study, url = f"lease-ray-{secrets.token_hex(3)}", storage_url
    _refused_then_killed(["--space", "tiny", "-O", "macs", "-O", "params", "--engine", "ray",
                          "--workers", "1", "--batch-size", "2", "-n", "12"],
                         study, url, tmp_path, run_nas)
    done = subprocess.run(
        [sys.executable, "-m", "nas.cli", "search", "--study", study, "--storage", url,
         "--resume", "--no-progress", "--json"],
        env=_env(tmp_path), stdin=subprocess.DEVNULL, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    res = load_results(study, url)
    assert len(res.budget_trials) == 12
    evaluated = [t.arch_hash for t in res.trials if t.duplicate_of is None
                 and not t.retried and t.state in ("COMPLETE", "FAIL")]
    assert len(evaluated) == len(set(evaluated))  # no subnet evaluated twice
    assert _holder(study, url) is None
