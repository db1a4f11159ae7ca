"""The foundation commands, run through the real entry point, and their error lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nas.cli import main


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ck") / "tiny.safetensors"
    assert main_ok(["supernet", "init", "--space", "tiny", "--out", str(path)])
    return path


def main_ok(argv: list[str]) -> bool:
    try:
        main(argv)
    except SystemExit as exc:
        return not exc.code
    return True


def test_spaces_list_json(run_nas):
    code, out, _ = run_nas(["spaces", "list", "--json"])
    assert code == 0
    names = [r["name"] for r in json.loads(out)]
    assert {"ofa_mbv3", "ofa_mbv3_w12", "cifar_mbv3", "tiny"} <= set(names)


def test_spaces_show_reports_size(run_nas):
    code, out, _ = run_nas(["spaces", "show", "ofa_mbv3", "--json"])
    info = json.loads(out)
    assert code == 0
    assert info["architectures"] == 7371**5
    assert info["architectures_times_resolutions"] == 7371**5 * 25


def test_spaces_sample_is_seeded(run_nas):
    _, a, _ = run_nas(["spaces", "sample", "cifar_mbv3", "--n", "3", "--seed", "4", "--jsonl"])
    _, b, _ = run_nas(["spaces", "sample", "cifar_mbv3", "--n", "3", "--seed", "4", "--jsonl"])
    _, c, _ = run_nas(["spaces", "sample", "cifar_mbv3", "--n", "3", "--seed", "5", "--jsonl"])
    assert a == b != c
    assert len(a.strip().splitlines()) == 3
    _, big, _ = run_nas(["spaces", "sample", "tiny", "--largest", "--json"])
    _, small, _ = run_nas(["spaces", "sample", "tiny", "--smallest", "--json"])
    assert json.loads(big)[0]["macs"] > json.loads(small)[0]["macs"]


def test_arch_info(run_nas):
    arch = json.dumps({"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "r": 160})
    code, out, _ = run_nas(["arch", "info", "--space", "ofa_mbv3", "--arch", arch, "--json"])
    info = json.loads(out)
    assert code == 0
    from nas.space import get_space

    space = get_space("ofa_mbv3")
    assert info["macs"] == space.macs(space.parse(arch))
    assert all(m > 0 for m in info["stage_macs"])
    assert sum(info["stage_macs"]) < info["macs"]
    assert info["resolution"] == 160
    assert len(info["hash"]) == 16


def test_export_and_verify_via_cli(tiny_ckpt, tmp_path, run_nas):
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps({"ks": [3, 5, 5, 5], "e": [2, 4, 4, 4], "d": [2, 1], "r": 16}))
    code, out, err = run_nas(["export", "--space", "tiny", "--checkpoint", str(tiny_ckpt),
                          "--arch", f"@{arch}", "--out", str(tmp_path / "x"), "--json"])
    assert code == 0, err
    manifest = json.loads(out)
    assert manifest["arch"]["ks"] == [3, 5, 5, 3]  # canonical: the skipped slot is fixed
    code, out, err = run_nas(["verify", str(tmp_path / "x"), "--json"])
    assert code == 0
    assert json.loads(out)["max_abs_diff"] <= 1e-4


BAD_ARCHS = [
    ({"ks": [4] * 20, "e": [3] * 20, "d": [2] * 5, "r": 224}, ["kernel size", "[3, 5, 7]", "4"]),
    ({"ks": [3] * 19, "e": [3] * 20, "d": [2] * 5, "r": 224}, ["ks", "20", "19"]),
    ({"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "r": 130}, ["r", "130", "128"]),
    ({"ks": [3] * 20, "e": [5] * 20, "d": [2] * 5, "r": 224}, ["expand ratio", "5"]),
    ({"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5}, ["missing", "'r'"]),
]


@pytest.mark.parametrize(("arch", "words"), BAD_ARCHS)
def test_bad_arch_gives_one_line_and_exit_2(arch, words, run_nas):
    code, _, err = run_nas(["arch", "info", "--space", "ofa_mbv3", "--arch", json.dumps(arch)])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ")
    for w in words:
        assert w in lines[0]


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["spaces", "show", "nope"], ["unknown search space", "'nope'", "ofa_mbv3"]),
        (["arch", "info", "--space", "tiny", "--arch", "{ks: 1"], ["not valid JSON"]),
        (["arch", "info", "--space", "tiny", "--arch", "@/nonexistent/a.json"], ["not found"]),
    ],
)
def test_bad_input_lines(argv, words, run_nas):
    code, _, err = run_nas(argv)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    for w in words:
        assert w in err


def test_checkpoint_errors(tiny_ckpt, tmp_path, run_nas):
    arch = json.dumps({"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "r": 24})
    base = ["export", "--arch", arch, "--out", str(tmp_path / "o")]
    code, _, err = run_nas([*base, "--space", "cifar_mbv3", "--checkpoint", str(tiny_ckpt)])
    assert code == 2
    assert "'tiny'" in err
    assert "'cifar_mbv3'" in err
    code, _, err = run_nas([*base, "--space", "tiny", "--checkpoint", str(tmp_path / "no.st")])
    assert code == 2
    assert "not found" in err
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(tiny_ckpt.read_bytes()[:1000])
    tiny_arch = json.dumps({"ks": [3] * 4, "e": [2] * 4, "d": [1, 1], "r": 16})
    code, _, err = run_nas(["export", "--arch", tiny_arch, "--out", str(tmp_path / "o"),
                        "--space", "tiny", "--checkpoint", str(trunc)])
    assert code == 2
    assert "truncated" in err
    assert not (tmp_path / "o").exists()


def test_entry_point_prints_no_traceback(tmp_path):
    """The installed `nas` script: one line on stderr, exit status 2."""
    proc = subprocess.run(
        [sys.executable, "-m", "nas.cli", "spaces", "show", "imagenet"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "unknown search space 'imagenet'" in proc.stderr
