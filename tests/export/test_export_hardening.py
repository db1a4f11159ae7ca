"""Export, as a careless or hostile user drives it: tolerances, odd --out, kills."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from nas._data import shipped_supernet
from nas.errors import ExportError
from nas.export import DEFAULT_RTOL, SCALE_FLOOR, export_subnet, verify_export
from nas.supernet import load_supernet

LARGEST_TINY = {"ks": [5, 5, 5, 5], "e": [4, 4, 4, 4], "d": [2, 2], "r": 24}
SMALL_TINY = json.dumps({"ks": [3, 3, 3, 3], "e": [2, 2, 2, 2], "d": [1, 1], "r": 16})


@pytest.fixture(scope="module")
def shipped():
    return load_supernet(shipped_supernet(), space="tiny")


def test_largest_subnet_of_the_shipped_supernet_exports(shipped, tmp_path):
    # its logits reach ~87: an absolute 1e-4 refused it ("differs by 0.000107")
    res = export_subnet(shipped, LARGEST_TINY, tmp_path / "big")
    v = res.manifest["verification"]
    assert v["max_abs_torch"] > 50
    assert v["rtol"] == DEFAULT_RTOL
    assert v["floor"] == SCALE_FLOOR
    assert v["allowed"] == pytest.approx(DEFAULT_RTOL * max(SCALE_FLOOR, v["max_abs_torch"]))
    assert v["max_abs_diff"] <= v["allowed"]
    assert "rtol" in v["rule"]
    assert "max|torch|" in v["rule"]
    again = verify_export(tmp_path / "big")
    assert again["allowed"] == pytest.approx(v["allowed"], rel=0.01)


def test_cli_exports_and_verifies_the_largest_subnet(tmp_path, run_nas):
    code, out, err = run_nas(["export", "-s", "tiny", "-c", str(shipped_supernet()),
                              "--arch", json.dumps(LARGEST_TINY), "--out", str(tmp_path / "e"),
                              "--json"])
    assert code == 0, err
    assert json.loads(out)["verification"]["allowed"] > 1e-4
    code, out, err = run_nas(["verify", str(tmp_path / "e")])
    assert code == 0, err
    assert "OK" in out, err


def test_tolerance_still_catches_a_real_mismatch(shipped, tmp_path):
    res = export_subnet(shipped, LARGEST_TINY, tmp_path / "e")
    # the stored tolerance is what verify applies; a far smaller one fails in one line
    with pytest.raises(ExportError, match=r"differs from torch's by .* \(allowed .* rtol 1e-09"):
        verify_export(tmp_path / "e", rtol=1e-9)
    assert res.manifest["verification"]["max_abs_diff"] > 1e-9


def _export_argv(out: str, *extra: str) -> list[str]:
    return ["export", "-s", "tiny", "-c", str(shipped_supernet()), "--arch", SMALL_TINY,
            "--out", out, *extra]


@pytest.mark.parametrize("out", [".", "sub/..", "./", "..", "/"])
def test_out_that_is_the_working_folder_is_refused(tmp_path, monkeypatch, run_nas, out):
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("mine")
    monkeypatch.chdir(work)
    for extra in ((), ("--overwrite",)):
        code, _, err = run_nas(_export_argv(out, *extra))
        assert code == 2, err
        assert err.startswith("error: --out ")
        assert len(err.strip().splitlines()) == 1
    # nothing written, no stray sub/, no temporary folder
    assert sorted(p.name for p in work.iterdir()) == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]


def test_out_sub_dotdot_of_an_empty_folder_creates_no_stray_folder(tmp_path, monkeypatch,
                                                                   run_nas):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_nas(_export_argv("e/sub/../x"))
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e"]
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == ["x"]


def test_overwrite_refuses_a_folder_that_is_not_an_export(tmp_path, run_nas):
    out = tmp_path / "docs"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    (out / "model.onnx").write_text("not a model")
    code, _, err = run_nas(_export_argv(str(out), "--overwrite"))
    assert code == 2, err
    assert "not part of an export (thesis.tex)" in err, err
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "thesis.tex"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs"]


def test_failed_export_to_a_new_nested_folder_creates_no_folders(shipped, tmp_path):
    with pytest.raises(ExportError):
        export_subnet(shipped, LARGEST_TINY, tmp_path / "a" / "b" / "c", rtol=-1.0)
    assert list(tmp_path.iterdir()) == []


def test_killed_export_leaves_no_temporary_folder(tmp_path):
    """SIGKILL an export mid-way; the next export to that folder removes the leftovers."""
    out = tmp_path / "e"
    code = ("import sys, time\n"
            "import nas.export._package as P\n"
            "real = P.verify_onnx\n"
            "def slow(*a, **k):\n"
            "    time.sleep(60)\n"
            "    return real(*a, **k)\n"
            "P.verify_onnx = slow\n"
            "from nas.cli import main\n"
            "main(sys.argv[1:])\n")
    proc = subprocess.Popen([sys.executable, "-c", code, *_export_argv(str(out))],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not any((p / "model.onnx").exists() for p in tmp_path.glob(".e.tmp-*")):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the export never started writing"
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert [p.name for p in tmp_path.glob(".e.tmp-*")], "the kill left nothing to clean"
    assert not out.exists()
    net = load_supernet(shipped_supernet())
    export_subnet(net, SMALL_TINY, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e"]
    verify_export(out)


def test_temporary_folders_of_running_exports_are_kept(shipped, tmp_path):
    live = tmp_path / f".e.tmp-{_host()}-{os.getpid()}-abc123"
    live.mkdir()
    export_subnet(shipped, SMALL_TINY, tmp_path / "e")
    assert live.is_dir()


def _host() -> str:
    from nas.export._package import _host as host

    return host()


@pytest.mark.parametrize("manifest", [
    "[]", "1e999", '"x"', "{}", '{"format": "nas.export/1"}',
    '{"format": "nas.export/1", "space": "tiny", "arch": {}, "resolution": 16, '
    '"files": {"../../etc/passwd": {"sha256": "0"}}}',
    '{"format": "nas.export/1", "space": "tiny", "arch": [], "resolution": 16, "files": {}}',
    '{"format": "nas.export/1", "space": "nope", "arch": {}, "resolution": 16, "files": {}}',
    "[" * 100000 + "]" * 100000,
    '{"format": ' + "9" * 5000 + "}",
])
def test_verify_refuses_a_bad_manifest_in_one_line(tmp_path, run_nas, manifest):
    (tmp_path / "manifest.json").write_text(manifest)
    code, out, err = run_nas(["verify", str(tmp_path)])
    assert code == 2
    assert out == ""
    assert err.startswith("error: "), err
    assert len(err.strip().splitlines()) == 1, err


def test_export_a_kill_took_away_mid_replace_is_put_back(shipped, tmp_path):
    """Killed between its two renames, an overwrite leaves the old export as .e.old-*."""
    first = export_subnet(shipped, SMALL_TINY, tmp_path / "e").manifest
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    os.replace(tmp_path / "e", tmp_path / f".e.old-{_host()}-{dead.pid}")
    with pytest.raises(ExportError, match="not empty"):  # it is back, and not overwritten
        export_subnet(shipped, LARGEST_TINY, tmp_path / "e")
    assert json.loads((tmp_path / "e" / "manifest.json").read_text()) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e"]
    verify_export(tmp_path / "e")
