"""Fault tests on a real two-node Ray cluster (``tests/cluster/conftest.py``): a measurement
routed to the node with the device's resource, a search spanning both nodes, the second node
lost mid-search, and a driver killed with two workers then resumed."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
import yaml

from nas._data import shipped_supernet
from nas.db import LatencyDB
from nas.latency import fit_predictor
from nas.measure import TimingConfig, measure_architectures, sample_for_measurement
from nas.search import load_results

pytestmark = [pytest.mark.cluster, pytest.mark.ray, pytest.mark.slow]

SPACE = "tiny"


@pytest.fixture(scope="module")
def latency_db(cluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A database with a cpu-1t predictor, and a `pi4-sim` profile placed by Ray on the node
    advertising ``device:pi4`` whose two subnets `nas latency measure` timed on the cluster."""
    root = tmp_path_factory.mktemp("cluster-db")
    db = str(root / "latency.sqlite")
    Path(cluster.env["NAS_DEVICES_DIR"], "pi4-sim.yaml").write_text(yaml.safe_dump(
        {"placement": "ray", "ray_resource": "device:pi4", "intra_op_threads": 1,
         "description": "timed on the cluster node with device:pi4"}))
    res = cluster.run(["latency", "measure", "--device", "pi4-sim", "--space", SPACE,
                       "-n", "2", "--quick", "--no-progress", "--db", db])
    assert res.returncode == 0, res.stderr[-3000:]
    # the searches' cpu-1t predictor: timed here, in this process (no Ray needed)
    store = LatencyDB(db)
    try:
        measure_architectures("cpu-1t", SPACE, sample_for_measurement(SPACE, 8, seed=0), store,
                              progress=False, config=TimingConfig.quick(), address=None)
        fit_predictor("cpu-1t", SPACE, "additive", db=store, holdout=0.25)
    finally:
        store.close()
    return db


def _search_args(db: str, storage: Path, study: str, n: int, *extra: str) -> list[str]:
    return ["search", "--space", SPACE, "--checkpoint", str(shipped_supernet()),
            "--data", "digits", "-O", "accuracy", "-O", "latency:cpu-1t", "-n", str(n),
            "--workers", "2", "--batch-size", "2", "--db", db, "--study", study,
            "--storage", str(storage), "--no-progress", *extra]


def _study(storage: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(storage))))


def _evaluated_twice(study: optuna.Study) -> dict[str, int]:
    """Subnets whose result was told twice. Retried trials do not count: those a dead worker
    held (marked ``retried``) and those a killed driver left RUNNING, which the resuming driver
    fails and lists in the study's ``retried_trials`` (a kill between a trial's first user
    attribute and its ``tell`` leaves one with its ``arch_hash`` but no result)."""
    orphans = set(study.user_attrs.get("retried_trials") or [])
    counts = Counter(
        t.user_attrs["arch_hash"] for t in study.trials
        if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
        and "arch_hash" in t.user_attrs and t.user_attrs.get("duplicate_of") is None
        and not t.user_attrs.get("retried") and t.number not in orphans)
    return {h: n for h, n in counts.items() if n > 1}


def _node_of(cluster, pids: set[int]) -> dict[int, int]:
    """Which node (0 or 1) each worker pid ran on, from the nodes' process groups."""
    out = {}
    for i in range(len(cluster.nodes)):
        for pid in set(cluster.pids(i)) & pids:
            out[pid] = i
    return out


def test_a_measurement_runs_on_the_node_with_the_device_resource(cluster, latency_db) -> None:
    db = LatencyDB(latency_db)
    try:
        recs = db.measurements("pi4-sim", SPACE)
    finally:
        db.close()
    assert len(recs) == 2
    assert all(r.status == "ok" for r in recs)
    node = cluster.node_id(1)
    assert node != cluster.node_id(0)
    assert [r.env["ray"]["node_id"] for r in recs] == [node, node]
    assert all(r.env["placement"] == "ray" for r in recs)


def test_a_search_spans_both_nodes_and_survives_losing_one(cluster, latency_db,
                                                           tmp_path: Path) -> None:
    """Two evaluators, one per node; the second node is killed mid-search: the search
    finishes its budget, the lost batch runs again on the head, nothing runs twice."""
    storage = tmp_path / "s.journal"
    proc = cluster.popen(_search_args(latency_db, storage, "span", 30, "--json"))
    killed_pids: set[int] = set()
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            try:
                done = [t for t in _study(storage, "span").trials
                        if t.state == optuna.trial.TrialState.COMPLETE]
            except KeyError:
                done = []
            pids = {int(t.user_attrs["worker_pid"]) for t in done if "worker_pid" in t.user_attrs}
            nodes = _node_of(cluster, pids)
            if len(done) >= 6 and set(nodes.values()) == {0, 1}:
                killed_pids = {p for p, n in nodes.items() if n == 1}
                cluster.kill_node(1)
                break
            time.sleep(0.1)
        assert killed_pids, "the search never ran on both nodes"
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    assert proc.returncode == 0, err.decode()[-3000:]
    summary = json.loads(out)
    assert summary["n_trials"] == 30
    res = load_results("span", str(storage))
    assert len(res.budget_trials) == 30
    study = _study(storage, "span")
    assert not _evaluated_twice(study)
    retried = [t for t in study.trials if t.user_attrs.get("retried")]
    rerun = {t.user_attrs.get("retry_of") for t in study.trials} - {None}
    assert {t.number for t in retried} <= rerun  # every lost trial ran again


def test_a_driver_killed_with_two_workers_resumes(cluster, latency_db, tmp_path: Path) -> None:
    storage = tmp_path / "k.journal"
    proc = cluster.popen(_search_args(latency_db, storage, "kill", 30))
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            try:
                done = [t for t in _study(storage, "kill").trials
                        if t.state == optuna.trial.TrialState.COMPLETE]
            except KeyError:
                done = []
            if len(done) >= 8:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
        proc.wait(30)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    before = {t.number: (tuple(t.values), t.user_attrs["arch_hash"])
              for t in _study(storage, "kill").trials
              if t.state == optuna.trial.TrialState.COMPLETE}
    assert 8 <= len(before) < 30
    res = cluster.run(_search_args(latency_db, storage, "kill", 30, "--resume", "--json"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(res.stdout)["n_trials"] == 30
    study = _study(storage, "kill")
    after = {t.number: t for t in study.trials}
    for n, (values, h) in before.items():  # nothing completed was lost or changed
        assert after[n].state == optuna.trial.TrialState.COMPLETE
        assert after[n].user_attrs["arch_hash"] == h
        assert tuple(after[n].values) == values
    assert len(load_results("kill", str(storage)).budget_trials) == 30
    assert not _evaluated_twice(study)
