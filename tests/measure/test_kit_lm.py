"""A measurement kit for a language model's workload: `nas devices add --decode` makes the
profile, `nas latency kit` exports the subnets with their KV cache, the kit's run.py times one
decoding step each with numpy and onnxruntime alone, and `nas latency import` stores them."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from nas.db import LatencyDB
from nas.devices import get_device
from nas.space import get_space

Run = Callable[[list[str]], tuple[int, str, str]]

SPACE = "gpt_tiny"  # a context of 32 tokens
# run.py in a fresh interpreter where `nas` cannot be imported (as on a device)
_NO_NAS = ("import runpy, sys; sys.modules['nas'] = None; sys.argv = ['run.py', *sys.argv[1:]];"
           " runpy.run_path('run.py', run_name='__main__')")


def test_a_decode_kit_runs_without_nas_and_its_results_import(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_nas: Run) -> None:
    monkeypatch.setenv("NAS_DEVICES_DIR", str(tmp_path / "devices"))
    code, out, err = run_nas(["devices", "add", "phone-decode16", "--external", "--decode",
                              "16", "--json"])
    assert code == 0, err
    assert json.loads(out)["workload"] == {"phase": "decode", "context": 16, "cache": "kv"}
    url = f"sqlite:///{tmp_path / 'lat.sqlite'}"
    code, out, err = run_nas(["latency", "kit", "--space", SPACE, "--device", "phone-decode16",
                              "--n", "3", "--out", str(tmp_path / "kit"), "--db", url,
                              "--json"])
    assert code == 0, err
    kit = tmp_path / "kit"
    manifest = json.loads((kit / "manifest.json").read_text())
    assert manifest["workload"]["dims"] == {"sequence": 1, "past_sequence": 15}
    proc = subprocess.run([sys.executable, "-I", "-c", _NO_NAS, "--repeats", "2"],
                          cwd=kit, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "each call decode at context 16 (KV cache)" in proc.stderr
    lines = [json.loads(t) for t in (kit / "results.jsonl").read_text().splitlines()]
    assert lines[0]["workload"] == "decode at context 16 (KV cache)"
    assert [x["status"] for x in lines[1:]] == ["ok"] * 4, lines[1:]
    code, out, err = run_nas(["latency", "import", str(kit / "results.jsonl"), "--db", url,
                              "--json"])
    assert code == 0, err
    assert json.loads(out)["n_rows"] == 4
    db = LatencyDB(url)
    recs = db.measurements("phone-decode16", SPACE)
    sp = get_space(SPACE)
    assert {r.arch.hash for r in recs} == {e["hash"] for e in
                                           [manifest["reference"], *manifest["models"]]}
    assert sp.middle().hash == manifest["reference"]["hash"]
    assert all(r.latency_ms is not None and r.latency_ms > 0 for r in recs)
    assert get_device("phone-decode16").workload == db.device_profile("phone-decode16").workload
    db.close()


@pytest.mark.parametrize(("args", "words"), [
    (("--prefill", "8", "--decode", "16"), "--prefill and --decode: a profile times one "
     "workload"),
    (("--recompute",), "--recompute is for a decode workload: give --decode C too"),
    (("--decode", "1"), "workload.context = 1: must be an integer in [2, "),
])
def test_devices_add_refuses_a_bad_workload_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_nas: Run, args: tuple[str, ...],
        words: str) -> None:
    monkeypatch.setenv("NAS_DEVICES_DIR", str(tmp_path / "devices"))
    code, out, err = run_nas(["devices", "add", "lm", *args])
    assert code == 2, (out, err)
    assert words in err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "devices").exists() or not list((tmp_path / "devices").iterdir())
