"""Searches on tiny with real Ray actors, a real Optuna journal storage, real predictors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml

from nas.export import verify_export
from nas.latency import load_predictor
from nas.proxies import ProxyContext, get_proxy
from nas.search import SearchConfig, load_results, run_search, verify_trials
from nas.space import get_space

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _write(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def _non_dominated(rows: list[tuple[float, float]]) -> bool:
    """(accuracy to maximise, latency to minimise) rows: none dominates another."""
    for a in rows:
        for b in rows:
            if b != a and b[0] >= a[0] and b[1] <= a[1]:
                return False
    return True


def test_two_workers_end_to_end_then_results_and_verified_exports(
        local_ray, make_config, search_env, run_nas, tmp_path) -> None:
    cfg = make_config(n_trials=16, study="e2e")
    code, out, err = run_nas(["search", "--config", str(_write(tmp_path / "s.yaml", cfg)),
                              "--json", "--no-progress"])
    assert code == 0, err
    summary = json.loads(out)
    assert summary["n_trials"] == 16
    assert summary["n_complete"] + summary["n_failed"] == 16
    front = summary["front"]
    assert front
    assert _non_dominated([(t["accuracy"], t["latency_ms"]["cpu-1t"])
                                     for t in front])

    res = load_results("e2e", cfg["storage"])
    done = [t for t in res.trials if t.state == "COMPLETE"]
    sp = get_space("tiny")
    archs = [sp.parse(t.arch) for t in done]
    # what the actors computed is what the predictor and the space say
    pred = load_predictor("cpu-1t", "tiny", db=search_env["db"])
    assert [t.latency_ms["cpu-1t"] for t in done] == pytest.approx(list(pred.predict(archs)))
    assert [t.macs for t in done] == [sp.macs(a) for a in archs]
    # and the accuracy is the inherited accuracy computed here
    ctx = ProxyContext.build("tiny", checkpoint=cfg["checkpoint"], data="digits", cache=False,
                             **cfg["proxy_options"])
    best = res.front[0]
    assert best.accuracy == pytest.approx(
        float(get_proxy("inherited").score([best.arch], ctx)[0]))
    # both workers evaluated trials
    study = optuna.load_study(study_name="e2e", storage=res_storage(cfg))
    pids = {t.user_attrs.get("worker_pid") for t in study.trials} - {None}
    assert len(pids) == 2

    verified = verify_trials("e2e", cfg["storage"], 1, progress=False)
    assert list(verified) == [front[0]["number"]]
    assert verified[front[0]["number"]]["cpu-1t"] > 0

    code, out, _ = run_nas(["results", "--study", "e2e", "--storage", cfg["storage"], "--json"])
    again = json.loads(out)
    assert [t["number"] for t in again["front"]] == [t["number"] for t in front]
    assert again["front"][0]["measured_ms"] == verified[front[0]["number"]]
    assert again["hypervolume"] > 0

    code, out, err = run_nas(["export", "--study", "e2e", "--storage", cfg["storage"],
                              "--pareto", "--out", str(tmp_path / "ex"), "--json"])
    assert code == 0, err
    dirs = json.loads(out)["out"]
    assert len(dirs) == len(front)
    for d, t in zip(dirs, front, strict=True):
        assert verify_export(d)["arch_hash"] == t["arch_hash"]
        m = json.loads((Path(d) / "manifest.json").read_text())
        assert m["extra"]["search"]["trial"] == t["number"]
        assert m["extra"]["search"]["predicted_latency_ms"] == t["latency_ms"]
        assert m["extra"]["search"]["bn_recalibrated"] is True


def res_storage(cfg: dict) -> optuna.storages.BaseStorage:
    from nas.search import open_storage

    return open_storage(cfg["storage"])


def test_constrained_search_returns_only_feasible_subnets(local_ray, make_config,
                                                         search_env) -> None:
    sp = get_space("tiny")
    pred = load_predictor("cpu-1t", "tiny", db=search_env["db"])
    bound = float(np.median(pred.predict(sp.sample_many(200, seed=3))))
    cfg = SearchConfig.model_validate(make_config(
        objectives=["accuracy"], constraints={"latency:cpu-1t": bound}, n_trials=16,
        study="constrained"))
    res = run_search(cfg, progress=False)
    done = [t for t in res.trials if t.state == "COMPLETE"]
    assert len(res.budget_trials) == 16
    for t in done:
        assert t.feasible == (t.latency_ms["cpu-1t"] <= bound)
    assert len(res.front) == 1
    assert res.front[0].feasible
    assert res.front[0].accuracy == max(t.accuracy for t in done if t.feasible)


@pytest.mark.parametrize("sampler", ["nsga2", "random", "gp", "evolution"])
def test_every_sampler_spends_its_budget(local_ray, make_config, sampler: str) -> None:
    cfg = SearchConfig.model_validate(make_config(
        objectives=["macs", "latency:cpu-1t"], sampler=sampler, population=4, n_trials=10,
        study=f"s-{sampler}", checkpoint=None, data=None, engine="ray"))
    res = run_search(cfg, progress=False)
    assert len(res.budget_trials) == 10
    assert res.n_complete == 10
    assert res.front


def test_a_gpt_space_is_searched_on_ray_by_its_family_s_parameters(local_ray,
                                                                    make_config) -> None:
    """A space of the gpt family on Ray actors: the sampler asks the family's parameters,
    the actors score with the training-free proxy, no checkpoint, data or latency."""
    cfg = SearchConfig.model_validate(make_config(
        space="gpt_tiny", proxy="nonembedding-params", proxy_options={},
        objectives=["accuracy", "macs"], sampler="nsga2", population=4, n_trials=8,
        workers=1, study="gpt", checkpoint=None, data=None, engine="ray"))
    res = run_search(cfg, progress=False)
    assert len(res.budget_trials) == 8
    assert res.n_complete == 8
    sp = get_space("gpt_tiny")
    done = [t for t in res.trials if t.state == "COMPLETE"]
    archs = [sp.parse(t.arch) for t in done]
    assert [t.macs for t in done] == [sp.macs(a) for a in archs]
    assert [t.accuracy for t in done] == [float(sp.costs([a])["layer_params"].sum())
                                          for a in archs]
    assert res.front
    assert _non_dominated([(t.accuracy, t.macs) for t in res.front])
    study = optuna.load_study(study_name="gpt", storage=res_storage(cfg.model_dump()))
    assert set(study.trials[0].params) == set(sp.search_params())


def test_bad_input_gets_one_line(local_ray, make_config, search_env, run_nas,
                                 tmp_path) -> None:
    def run(**kw: object) -> str:
        cfg = make_config(**kw)
        code, _, err = run_nas(["search", "--config", str(_write(tmp_path / "b.yaml", cfg)),
                                "--no-progress"])
        assert code == 2, err
        line = err.strip()
        assert line.startswith("error: "), err
        assert "\n" not in line, err
        return line

    msg = run(constraints={"latency:cpu-1t": 1e-6})
    assert "cannot be met" in msg
    # refused at once: before the study was opened (none was left behind), so before any
    # worker was started or subnet evaluated
    assert not Path(make_config()["storage"]).exists()
    assert "unknown device 'phone9'" in run(objectives=["accuracy", "latency:phone9"])
    assert "unknown proxy 'oracle'" in run(proxy="oracle")
    assert "cannot reach storage postgresql://u:***@127.0.0.1:9/x" in run(
        storage="postgresql://u:secret@127.0.0.1:9/x")
    code, _, _ = run_nas(["supernet", "init", "--space", "cifar_mbv3", "--out",
                          str(tmp_path / "other.safetensors")])
    assert code == 0
    assert "for space 'cifar_mbv3'" in run(checkpoint=str(tmp_path / "other.safetensors"))
    # a study name that exists (written by the predictor engine: the refusal is the
    # storage's, whichever engine wrote it): with other objectives, and with the same ones
    ok = {k: v for k, v in make_config(objectives=["macs", "latency:cpu-1t"], study="taken",
                                       n_trials=2).items() if k not in ("workers", "batch_size")}
    run_search(SearchConfig.model_validate(ok), progress=False)
    assert "exists" in run(study="taken")
    assert "other objectives" in run(study="taken")
    assert "--resume" in run(study="taken", objectives=["macs", "latency:cpu-1t"])


def test_a_killed_worker_still_yields_the_full_budget(local_ray, make_config) -> None:
    cfg = SearchConfig.model_validate(make_config(n_trials=30, batch_size=1, study="kill"))
    study_storage = res_storage(make_config())
    killed: list[int] = []

    def killer() -> None:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                st = optuna.load_study(study_name="kill", storage=study_storage)
                done = [t for t in st.trials if t.state == optuna.trial.TrialState.COMPLETE]
            except KeyError:
                done = []
            if len(done) >= 4:  # kill the actor process that evaluated the last trial
                pid = done[-1].user_attrs["worker_pid"]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.05)

    th = threading.Thread(target=killer)
    th.start()
    res = run_search(cfg, progress=False)
    th.join()
    assert killed, "the worker was not killed"
    assert len(res.budget_trials) == 30
    retried = [t for t in res.trials if t.retried]
    assert retried
    assert all("worker died" in (t.error or "") for t in retried)
    st = optuna.load_study(study_name="kill", storage=study_storage)
    rerun = {t.user_attrs.get("retry_of") for t in st.trials} - {None}
    assert {t.number for t in retried} <= rerun


def test_resume_after_a_killed_driver_repeats_nothing(local_ray, make_config,
                                                      tmp_path) -> None:
    cfg = make_config(n_trials=40, workers=1, batch_size=1, study="resume")
    path = _write(tmp_path / "r.yaml", cfg)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "nas.cli", "search", "--config", str(path), "--no-progress"],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    storage = res_storage(cfg)
    before: dict[int, tuple] = {}
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            try:
                st = optuna.load_study(study_name="resume", storage=storage)
                done = [t for t in st.trials if t.state == optuna.trial.TrialState.COMPLETE]
            except KeyError:
                done = []
            if len(done) >= 8:
                os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it started
                break
            time.sleep(0.05)
        proc.wait(30)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
        st = optuna.load_study(study_name="resume", storage=storage)
        before = {t.number: (tuple(t.values), t.user_attrs["arch_hash"]) for t in st.trials
                  if t.state == optuna.trial.TrialState.COMPLETE}
        assert 8 <= len(before) < 40
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)

    res = run_search(SearchConfig.model_validate(cfg), resume=True, progress=False)
    assert len(res.budget_trials) == 40
    after = {t.number: t for t in res.trials}
    for n, (values, h) in before.items():  # nothing completed was lost or changed
        assert after[n].state == "COMPLETE"
        assert after[n].arch_hash == h
        assert tuple(after[n].values.values()) == values
    evaluated = [t.arch_hash for t in res.trials
                 if t.duplicate_of is None and not t.retried and t.state in ("COMPLETE", "FAIL")]
    assert len(evaluated) == len(set(evaluated))  # no subnet evaluated twice


def test_the_study_opens_in_optuna_dashboard(local_ray, make_config, tmp_path) -> None:
    """`optuna-dashboard <journal file>`, the command `nas search` prints, lists the study
    with its objective names and trials."""
    import requests

    pytest.importorskip("optuna_dashboard")
    cfg = SearchConfig.model_validate(make_config(
        objectives=["macs", "latency:cpu-1t"], n_trials=4, study="dash", checkpoint=None,
        data=None, engine="ray"))
    run_search(cfg, progress=False)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dash = subprocess.Popen(
        [str(Path(sys.executable).parent / "optuna-dashboard"), cfg.storage_url,
         "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 60
        while True:
            try:
                studies = requests.get(f"http://127.0.0.1:{port}/api/studies", timeout=5).json()
                break
            except requests.ConnectionError:
                assert time.time() < deadline, "dashboard did not start in time"
                assert dash.poll() is None, "dashboard did not start: its process exited"
                time.sleep(0.3)
        (study,) = [s for s in studies["study_summaries"] if s["study_name"] == "dash"]
        detail = requests.get(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}",
                              timeout=10).json()
        assert len(detail["trials"]) == 4
        assert detail["objective_names"] == ["macs", "latency:cpu-1t"]
    finally:
        os.killpg(dash.pid, signal.SIGTERM)
        dash.wait(10)


def test_results_without_a_study_lists_the_studies(local_ray, make_config, run_nas) -> None:
    cfg = SearchConfig.model_validate(make_config(
        objectives=["params", "latency:cpu-1t"], n_trials=3, study="listed", checkpoint=None,
        data=None, engine="ray"))
    run_search(cfg, progress=False)
    code, out, _ = run_nas(["results", "--storage", cfg.storage_url, "--json"])
    assert code == 0
    (row,) = [r for r in json.loads(out) if r["study"] == "listed"]
    assert row["trials"] == 3
    assert row["objectives"] == ["params", "latency:cpu-1t"]
    code, _, err = run_nas(["results", "--study", "nope", "--storage", cfg.storage_url])
    assert code == 2
    assert "no study 'nope'" in err
    assert "listed" in err
