"""One CLI voice (issue 23, item 6): every bad input is one ``error:`` line and exit 2.

Before, click's own usage errors (a missing argument, an unknown option, a value of the wrong
type or out of range) and six ``typer.BadParameter`` raises printed a box of several lines; a
torch device was ``--device`` in three commands and a device profile in the others.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from expect import one_error

ARCH = json.dumps({"ks": [3, 3, 3, 3], "e": [2, 2, 2, 2], "d": [1, 1], "r": 16})
NAS = str(Path(sys.executable).parent / "nas")
WARNING = "warning: --device is now --torch-device (a profile name elsewhere)"


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


BAD = [
    # the six that were typer.BadParameter boxes
    (["train", "--config", "c.yaml", "--torch-device", "gpu"], ["--torch-device = 'gpu'",
                                                                 "cpu, cuda or cuda:N"]),
    (["proxies", "eval", "-s", "tiny", "-f", "a.jsonl", "-p", "macs", "--torch-device", "tpu"],
     ["--torch-device = 'tpu'"]),
    (["accuracy", "fit", "-s", "tiny", "-c", "ck.safetensors", "--model", "nope"],
     ["--model = 'nope'", "mlp"]),
    (["spaces", "sample", "tiny", "--largest", "--smallest"], ["--largest", "--smallest"]),
    (["latency", "predict", "-d", "cpu-1t", "-s", "tiny"], ["--arch", "--arch-file",
                                                          "exactly one"]),
    (["latency", "check", "-d", "cpu-1t", "-s", "tiny", "--arch", ARCH, "--arch-file",
      "a.jsonl"], ["--arch", "--arch-file", "at most one"]),
    # click's usage errors
    (["spaces", "show"], ["missing argument", "name", "nas spaces show --help"]),
    (["latency", "measure"], ["missing option", "--device"]),
    (["search", "--n-trials", "x"], ["--n-trials = 'x'", "integer"]),
    (["latency", "measure", "-d", "cpu-1t", "-s", "tiny", "--n", "-1"],
     ["--n = -1", "greater than or equal to 0"]),
    (["spaces", "sample", "tiny", "--n", "0"], ["--n = 0"]),
    (["latency", "fit", "-d", "cpu-1t", "-s", "tiny", "--holdout", "2"],
     ["--holdout = 2", "0.95"]),
    (["serve", "--port", "70000"], ["--port = 70000", "65535"]),
    (["export", "--out", "e", "--opset", "x"], ["--opset = 'x'"]),
    (["spaces", "sample", "tiny", "--bogus"], ["no such option", "--bogus"]),
    (["spaces", "sample", "tiny", "--n"], ["--n", "requires an argument"]),
    (["spaces", "sample", "tiny", "extra"], ["unexpected extra argument", "extra"]),
    (["bogus"], ["no such command", "'bogus'"]),
    # the shared option types
    (["finetune", "e", "--out", "f", "--epochs", "1", "--torch-device", "cuda:x"],
     ["--torch-device = 'cuda:x'"]),
    (["finetune", "e", "--out", "f", "--epochs", "1", "--seed", "-3"], ["--seed = -3"]),
    (["report", "--study", "a/b"], ["--study = 'a/b'"]),
    (["export", "--out", "e", "--study", "../x", "--pareto"], ["--study = '../x'"]),
    (["finetune", "--study", "", "--trial", "1", "--out", "f", "--epochs", "1"],
     ["--study = ''"]),
    (["train", "--config", "c.yaml", "--torch-device", "cuda:1", "--workers", "2"],
     ["--torch-device = 'cuda:1'", "workers"]),
]


@pytest.mark.parametrize("argv, needles", BAD, ids=lambda a: " ".join(a[:4]))
def test_bad_input_is_one_error_line(tmp_path, monkeypatch, run_nas, argv, needles):
    monkeypatch.chdir(tmp_path)
    one_error(run_nas(argv), *needles)
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("argv", [["spaces", "show"], ["search", "--n-trials", "x"],
                                  ["spaces", "sample", "tiny", "--bogus"]])
def test_the_installed_script_prints_no_box(argv):
    done = subprocess.run([NAS, *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: "), done.stderr
    assert not re.search("[╭│╰]|Usage:", done.stderr), done.stderr


def test_help_is_unchanged(run_nas):
    code, out, err = run_nas(["spaces", "sample", "--help"])
    assert code == 0
    assert err == ""
    assert "Usage: nas spaces sample" in out
    assert "--largest" in out
    code, out, err = run_nas([])  # no command: the help, as before
    assert code == 2
    assert "Usage: nas" in out
    assert err == ""


# ---------------------------------------------------------------------- --torch-device
TORCH_COMMANDS = [["train"], ["finetune"], ["proxies", "eval"], ["accuracy", "fit"]]


@pytest.mark.parametrize("command", TORCH_COMMANDS, ids=" ".join)
def test_torch_device_in_help_and_device_hidden(run_nas, command):
    code, out, _ = run_nas([*command, "--help"])
    assert code == 0
    assert "--torch-device" in out
    assert not re.search(r"(?<![\w-])--device\b", out), out


@pytest.fixture
def archs(tmp_path, run_nas) -> Path:
    code, out, err = run_nas(["spaces", "sample", "tiny", "--n", "2", "--jsonl"])
    assert code == 0, err
    path = tmp_path / "a.jsonl"
    path.write_text(out)
    return path


def _scores(out: str) -> list[dict]:
    return [r["scores"] for r in json.loads(out)["archs"]]


def test_old_device_spelling_still_works_with_a_warning(run_nas, archs):
    base = ["proxies", "eval", "-s", "tiny", "-f", str(archs), "-p", "macs", "--no-cache",
            "--json"]
    code, new, err = run_nas([*base, "--torch-device", "cpu"])
    assert code == 0, err
    assert err == "", err
    code, old, err = run_nas([*base, "--device", "cpu"])
    assert code == 0, err
    assert err.strip() == WARNING
    assert _scores(old) == _scores(new)


@pytest.mark.parametrize("argv, needle", [
    (["--device", "cuda", "--torch-device", "cpu"], "give --torch-device only"),
    (["--torch-device", "cpu", "--device", "cuda"], "give --torch-device only"),
    (["--device", "cpu-1t"], "--device (now --torch-device) = 'cpu-1t'"),
])
def test_old_device_spelling_refused(tmp_path, monkeypatch, run_nas, argv, needle):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_nas(["train", "--config", "c.yaml", *argv])
    assert code == 2, err
    warning, error = err.strip().split("\n")
    assert warning == WARNING
    assert error.startswith("error: "), error
    assert needle in error, error
    assert files_in(tmp_path) == []


def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:0", "cuda:12"])
def test_torch_device_values_accepted(tmp_path, monkeypatch, run_nas, device):
    # the option passes; the command then stops at the missing config file, or first at a GPU
    # that torch does not see here
    monkeypatch.chdir(tmp_path)
    line = one_error(run_nas(["train", "--config", "c.yaml", "--torch-device", device]))
    here = device == "cpu" or int(device.partition(":")[2] or 0) < _cuda_devices()
    assert ("config file not found: c.yaml" in line) == here, line
    if not here:
        assert f"--torch-device = {device!r}: torch sees" in line


@pytest.mark.skipif(_cuda_devices() > 0, reason="torch sees a GPU here")
def test_a_gpu_torch_does_not_see_is_one_line(run_nas, archs):
    # was torch's AssertionError "Torch not compiled with CUDA enabled", a traceback
    one_error(run_nas(["proxies", "eval", "-s", "tiny", "-f", str(archs), "-p", "synflow",
                       "--no-cache", "--torch-device", "cuda"]),
              "--torch-device = 'cuda': torch sees no CUDA device")


@pytest.mark.parametrize("device", ["gpu", "CUDA", "cuda:", "cuda:-1", "cpu:0", "cuda:1x", ""])
def test_torch_device_values_refused(tmp_path, monkeypatch, run_nas, device):
    monkeypatch.chdir(tmp_path)
    one_error(run_nas(["train", "--config", "c.yaml", "--torch-device", device]),
              f"--torch-device = {device!r}")


# ---------------------------------------------------------------------- shared options
def test_storage_and_study_share_one_help_text(run_nas):
    helps = {}
    for command in (["report"], ["export"], ["finetune"]):
        code, out, _ = run_nas([*command, "--help"])
        assert code == 0
        helps[command[0]] = re.sub(r"[│\s]+", " ", out)  # rich's table, wrapped
    for text in helps.values():
        assert "Optuna storage of the searches" in text
        assert "Study name of the search" in text


def test_empty_storage_is_the_default(tmp_path, monkeypatch, run_nas):
    # `--storage "$UNSET"`: the default storage, as before
    monkeypatch.chdir(tmp_path)
    one_error(run_nas(["report", "--study", "s", "--storage", ""]),
              "runs/studies/s.journal")
