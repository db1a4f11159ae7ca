"""``nas finetune``: an exported subnet of the shipped tiny supernet, fine-tuned on the digits."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from nas._data import shipped_supernet
from nas.errors import ConfigError, DataError, ExportError, NASError
from nas.export import export_subnet, load_export, verify_export
from nas.space import get_space
from nas.supernet import OFASupernet, load_supernet, save_supernet
from nas.train import (
    QUIET,
    BatchLoader,
    FinetuneWatch,
    Preprocess,
    Trainer,
    config_from_dict,
    finetune,
    load_data,
    load_dataset,
    work_dir_for,
)

#: a few batches per epoch: the whole file stays at a few seconds
SMALL: dict[str, Any] = {"train_limit": 96, "batch_size": 32, "lr": 0.05}


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An export of the tiny supernet's middle subnet, naming the shipped checkpoint."""
    ck = shipped_supernet()
    net = load_supernet(ck)
    out = tmp_path_factory.mktemp("src") / "export"
    export_subnet(net, net.space.middle(), out, checkpoint=ck)
    return out


class _Crash(Exception):
    pass


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@torch.no_grad()
def _train_loss(folder: Path) -> float:
    """Cross-entropy of an export's subnet on fixed training batches (no augmentation)."""
    sub, manifest = load_export(folder)
    data = load_dataset("digits", val_size=200, train_limit=SMALL["train_limit"],
                        image_size=24)
    pre = Preprocess.for_space(get_space(manifest["space"]), channels_last=False)
    total, n = 0.0, 0
    for xb, yb in BatchLoader(data.train, 32).epoch(0):
        total += float(F.cross_entropy(sub(pre(xb, manifest["resolution"])), yb,
                                       reduction="sum"))
        n += len(yb)
    return total / n


def test_finetune_lowers_the_loss_and_writes_a_verified_export(src, tmp_path):
    out = tmp_path / "ft"
    res = finetune(src, out, {"epochs": 2, "test": True, **SMALL}, data="digits",
                   watch=QUIET)
    # the subnet learned: its loss on the same training images went down
    assert _train_loss(out) < _train_loss(src) - 0.05
    assert verify_export(out)["arch_hash"] == json.loads(
        (src / "manifest.json").read_text())["arch_hash"]
    manifest = json.loads((out / "manifest.json").read_text())
    rec = manifest["extra"]["finetune"]
    assert rec == res.record
    assert rec["epochs"] == 2
    assert rec["lr"] == SMALL["lr"]
    assert rec["schedule"] == "cosine"
    assert rec["source"]["folder"] == str(src)
    assert rec["teacher"]["checkpoint"] == str(shipped_supernet())
    assert rec["teacher"]["same_as_export"] is True
    assert rec["data"]["source"] == "digits"
    assert rec["data"]["classes"] == 10
    assert set(rec["before"]) == set(rec["after"]) == {"val_acc", "val_loss", "test_acc",
                                                       "test_loss"}
    assert rec["after"]["val_loss"] < rec["before"]["val_loss"]
    assert manifest["checkpoint"]["path"] == str(shipped_supernet())  # a teacher next time
    rows = _rows(work_dir_for(out) / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert set(rows[0]) == {"epoch", "train_loss", "val_acc", "val_loss", "lr", "seconds"}
    assert float(rows[1]["lr"]) < float(rows[0]["lr"])  # the cosine decays


def test_resume_continues_where_it_stopped(src, tmp_path):
    out = tmp_path / "ft"
    cfg = {"epochs": 3, "kd": False, **SMALL}

    def crash_after_first(row: dict[str, Any]) -> None:
        if row["epoch"] == 1:
            raise _Crash

    with pytest.raises(_Crash):
        finetune(src, out, cfg, data="digits",
                 watch=FinetuneWatch(progress=False, on_epoch_end=crash_after_first))
    assert not out.exists()
    assert [r["epoch"] for r in _rows(work_dir_for(out) / "metrics.csv")] == ["1"]
    with pytest.raises(ConfigError, match="--resume"):  # a run is there: not overwritten
        finetune(src, out, cfg, data="digits", watch=QUIET)
    with pytest.raises(ConfigError, match="other options"):
        finetune(src, out, {**cfg, "lr": 0.1}, data="digits", watch=QUIET, resume=True)
    seen: list[int] = []
    res = finetune(src, out, cfg, data="digits", resume=True,
                   watch=FinetuneWatch(progress=False,
                                       on_epoch_end=lambda row: seen.append(row["epoch"])))
    assert seen == [2, 3]
    assert [r["epoch"] for r in _rows(work_dir_for(out) / "metrics.csv")] == ["1", "2", "3"]
    assert [m["epoch"] for m in res.record["metrics"]] == [1, 2, 3]
    assert res.record["teacher"] is None
    # the resumed run did what an uninterrupted one does (seeded by epoch and step)
    whole = finetune(src, tmp_path / "whole", cfg, data="digits", watch=QUIET)
    assert [m["train_loss"] for m in whole.metrics] == [m["train_loss"] for m in res.metrics]
    a, _ = load_export(out)
    b, _ = load_export(tmp_path / "whole")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.allclose(va.float(), vb.float(), atol=1e-6), k
    # --overwrite replaces the export and starts the run over: one epoch, one row
    again = finetune(src, out, {**cfg, "epochs": 1}, data="digits", watch=QUIET,
                     overwrite=True)
    assert again.record["epochs"] == 1
    assert [r["epoch"] for r in _rows(work_dir_for(out) / "metrics.csv")] == ["1"]


def test_bad_input_is_refused_in_one_line_and_writes_nothing(src, tmp_path, data_files,
                                                             monkeypatch):
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))  # decoded image folders
    tampered = tmp_path / "tampered"
    shutil.copytree(src, tampered)
    raw = bytearray((tampered / "weights.safetensors").read_bytes())
    raw[-1] ^= 0xFF
    (tampered / "weights.safetensors").write_bytes(bytes(raw))
    orphan = tmp_path / "orphan"  # its manifest names a teacher that is gone
    shutil.copytree(src, orphan)
    manifest = json.loads((orphan / "manifest.json").read_text())
    manifest["checkpoint"]["path"] = str(tmp_path / "gone.safetensors")
    (orphan / "manifest.json").write_text(json.dumps(manifest))
    other = save_supernet(OFASupernet("cifar_mbv3"), tmp_path / "cifar.safetensors")
    three = data_files.image_folder(tmp_path / "three", n=8, size=(24, 24))
    ten = data_files.image_folder(tmp_path / "ten", n=4, size=(24, 24),
                                  classes=tuple(f"c{i}" for i in range(10)))
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("mine")
    cases: list[tuple[Path, dict[str, Any], dict[str, Any], type[NASError], str]] = [
        (src, {"epochs": 0}, {}, ConfigError, "epochs = 0"),
        (src, {"epochs": -2}, {}, ConfigError, "epochs = -2"),
        (tmp_path / "nowhere", {"epochs": 1}, {}, ExportError, "not found"),
        (tampered, {"epochs": 1}, {}, ExportError, "sha256"),
        (orphan, {"epochs": 1}, {}, ConfigError, "--teacher"),
        (src, {"epochs": 1}, {"teacher": tmp_path / "none.safetensors"}, ConfigError,
         "no such checkpoint"),
        (src, {"epochs": 1}, {"teacher": other}, ConfigError, "space 'cifar_mbv3'"),
        (src, {"epochs": 1, "val_size": 8}, {"data": str(three)}, ConfigError, "3 classes"),
        (src, {"epochs": 1}, {"data": str(tmp_path / "no-data")}, DataError, "not found"),
        (src, {"epochs": 1, "batch_size": 10_000}, {}, ConfigError, "batch_size"),
        (src, {"epochs": 1, "val_size": 8, "test": True}, {"data": str(ten)}, DataError,
         "no test split"),
    ]
    for i, (source, cfg, kw, exc, words) in enumerate(cases):
        out = tmp_path / f"out{i}"
        with pytest.raises(exc, match=words) as info:
            finetune(source, out, {**cfg, "train_limit": 96}, watch=QUIET, **kw)
        assert "\n" not in str(info.value)
        assert not out.exists(), (i, words)
        assert not work_dir_for(out).exists(), (i, words)
    with pytest.raises(ExportError, match="exists and is not empty"):
        finetune(src, full, {"epochs": 1}, watch=QUIET)
    assert sorted(p.name for p in full.iterdir()) == ["notes.txt"]
    assert not work_dir_for(full).exists()


def test_cli_finetune_json_and_one_line_errors(src, tmp_path, run_nas):
    out = tmp_path / "cli-ft"
    code, stdout, _ = run_nas(["finetune", str(src), "--out", str(out), "--epochs", "1",
                               "--data", "digits", "--train-limit", "64", "--batch-size",
                               "32", "--no-kd", "--json"])
    assert code == 0
    res = json.loads(stdout)
    assert res["epochs"] == 1
    assert res["teacher"] is None
    assert len(res["metrics"]) == 1
    assert set(res["before"]) == {"val_acc", "val_loss"}
    verify_export(out)
    bad = tmp_path / "cli-bad"
    code, stdout, stderr = run_nas(["finetune", str(src), "--out", str(bad), "--epochs", "0"])
    assert code == 2
    assert stdout == ""
    assert stderr.startswith("error: ")
    assert stderr.count("\n") == 1
    assert "epochs" in stderr
    assert not bad.exists()
    code, _, stderr = run_nas(["finetune", "--help"])
    assert code == 0


def test_fine_tuning_trains_a_subnet_as_supernet_training_trains_it(tmp_path, tiny_config):
    """One loop: fine-tuning the largest subnet and a supernet run that trains only that
    subnet, from the same weights with the same seed and settings, end with the same weights,
    losses and learning rates."""
    ck = shipped_supernet()
    net = load_supernet(ck)
    largest = net.space.largest()  # at the largest resolution, as a non-elastic run trains
    export_subnet(net, largest, tmp_path / "src", checkpoint=ck)
    raw = tiny_config(tmp_path / "run", [{"task": "full", "epochs": 2, "lr": 0.05}],
                      seed=7, batch_size=32, init=str(ck), elastic_resolution=False,
                      channels_last=False, eval={"subnets": []},
                      data={"source": "digits", "val_size": 64, "train_limit": 96})
    cfg = config_from_dict(raw)
    data = load_data(cfg)
    trained = Trainer(cfg, progress=False, data=data).run()
    tuned = finetune(tmp_path / "src", tmp_path / "ft",
                     {"epochs": 2, "lr": 0.05, "batch_size": 32, "seed": 7, "kd": False},
                     data=data, watch=QUIET)
    # what the two runs' metrics.csv show, epoch by epoch
    assert [m["train_loss"] for m in tuned.metrics] == \
        [float(m["train_loss"]) for m in trained.metrics]
    assert [m["lr"] for m in tuned.metrics] == \
        pytest.approx([float(m["lr"]) for m in trained.metrics], abs=1e-7)
    # and the subnet they trained: the same optimizer steps, bit for bit
    want = load_supernet(trained.checkpoint).extract(largest).state_dict()
    got, _ = load_export(tmp_path / "ft")
    assert got.state_dict().keys() == want.keys()
    for k, v in got.state_dict().items():
        assert torch.equal(v, want[k]), k
    # an untrained subnet differs: the comparison is not vacuous
    assert any(not torch.equal(v, net.extract(largest).state_dict()[k])
               for k, v in want.items())
