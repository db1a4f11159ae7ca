"""Supernet training on the tiny space: every phase, resume, NaN, BatchNorm recalibration."""

from __future__ import annotations

import csv
import io
import itertools
import json

import numpy as np
import pytest
import torch

from nas.errors import ConfigError, TrainingError
from nas.supernet import OFASupernet, load_supernet
from nas.train import (
    BatchLoader,
    Trainer,
    config_from_dict,
    load_config,
    load_data,
    recalibrate_bn,
)
from nas.train._trainer import Trainer as _T

ALL_PHASES = [
    {"task": "full", "epochs": 1, "lr": 0.05},
    {"task": "kernel", "epochs": 1, "lr": 0.02},
    {"task": "depth", "epochs": 1, "lr": 0.02, "subnets_per_step": 2, "depths": [2]},
    {"task": "depth", "epochs": 1, "lr": 0.02, "subnets_per_step": 2},
    {"task": "expand", "epochs": 1, "lr": 0.02, "subnets_per_step": 2, "expand_ratios": [4]},
    {"task": "expand", "epochs": 1, "lr": 0.02, "subnets_per_step": 2},
    {"task": "sandwich", "epochs": 1, "lr": 0.02, "subnets_per_step": 3},
]


def rows(out):
    with open(out / "metrics.csv") as f:
        return list(csv.DictReader(f))


def weights(path):
    return {k: v.clone() for k, v in load_supernet(path).state_dict().items()}


@pytest.fixture
def digits(tiny_config, tmp_path):
    return load_data(config_from_dict(tiny_config(tmp_path / "x")))


def test_every_phase_trains_and_writes_its_files(tiny_config, tmp_path, digits, monkeypatch):
    stages = []
    orig = OFASupernet.reorder_channels
    monkeypatch.setattr(OFASupernet, "reorder_channels",
                        lambda self, s=0: (stages.append(s), orig(self, s))[1])
    cfg = config_from_dict(tiny_config(tmp_path / "run", ALL_PHASES))
    res = Trainer(cfg, progress=False, data=digits).run()
    out = tmp_path / "run"
    names = [p.name for p in cfg.phases]
    assert [r["phase"] for r in rows(out)] == names
    assert res.progress.step == 7 * 3  # 48 images / batch 16 per epoch
    for r in rows(out):
        assert np.isfinite(float(r["train_loss"]))
        assert 0 <= float(r["val_acc_smallest"]) <= 1
    assert (out / "teacher.safetensors").is_file()
    assert (out / "supernet.safetensors").is_file()
    # every phase moved the weights
    ws = [weights(out / f"phase-{n}.safetensors") for n in names]
    for a, b in itertools.pairwise(ws):
        assert any(not torch.equal(a[k], b[k]) for k in a)
    # the teacher is the supernet as the full phase left it
    t, f = weights(out / "teacher.safetensors"), ws[0]
    assert all(torch.equal(t[k], f[k]) for k in t)
    assert stages == [0, 1]  # channels sorted before each expand phase, groups nested
    meta = load_supernet(out / "supernet.safetensors").checkpoint_meta
    assert meta["data"]["source"] == "digits"
    assert meta["data"]["val_size"] == 48


def test_each_task_samples_only_its_elastic_dimensions(tiny_config, tmp_path):
    cfg = config_from_dict(tiny_config(tmp_path / "run", ALL_PHASES))
    t = Trainer(cfg, progress=False)
    t.net = OFASupernet("tiny")
    sp = t.net.space
    rng = np.random.default_rng(0)

    def sample(i, n=40):
        return [a for _ in range(n) for a in t._sample_archs(cfg.phases[i], 16, rng)]

    def active_e(archs):
        return {e for a in archs for (_s, _i, _k, e) in a.active_layers()}

    assert {a for a in sample(0)} == {sp.largest(16)}
    k = sample(1)
    assert {a.d for a in k} == {(2, 2)}
    assert active_e(k) == {4}
    assert {kk for a in k for kk in a.ks} == {3, 5}
    assert {a.d for a in sample(2)} == {(2, 2)}
    d = sample(3)
    assert {x for a in d for x in a.d} == {1, 2}
    assert active_e(d) == {4}
    assert active_e(sample(4)) == {4}
    assert active_e(sample(5)) == {2, 4}
    s = t._sample_archs(cfg.phases[6], 24, rng)
    assert s[:2] == [sp.largest(24), sp.smallest(24)]
    assert len(s) == 3


def test_resume_after_a_crash_repeats_nothing_and_matches_an_uninterrupted_run(
        tiny_config, tmp_path, digits, monkeypatch):
    phases = [{"task": "full", "epochs": 2, "lr": 0.05},
              {"task": "kernel", "epochs": 1, "lr": 0.02},
              {"task": "expand", "epochs": 2, "lr": 0.02, "subnets_per_step": 2}]
    ref = Trainer(config_from_dict(tiny_config(tmp_path / "ref", phases)), progress=False,
                  data=digits).run()
    cfg = config_from_dict(tiny_config(tmp_path / "run", phases))
    # crash in the middle of the 4th epoch (the first of the expand phase)
    calls = {"n": 0}
    real = _T._logits

    def crashing(self, x):
        if self.progress.phase == 2 and self.progress.step >= 7:
            calls["n"] += 1
            raise KeyboardInterrupt
        return real(self, x)

    with monkeypatch.context() as m:
        m.setattr(_T, "_logits", crashing)
        with pytest.raises(KeyboardInterrupt):
            Trainer(cfg, progress=False, data=digits).run()
    latest = json.loads((tmp_path / "run" / "checkpoints" / "latest.json").read_text())
    assert latest["progress"]["phase"] == 1
    assert latest["progress"]["epoch"] == 1
    with pytest.raises(ConfigError, match="--resume"):
        Trainer(cfg, progress=False, data=digits).run()
    res = Trainer(cfg, progress=False, data=digits).run(resume=True)
    assert res.progress.step == ref.progress.step == 15
    got, want = rows(tmp_path / "run"), rows(tmp_path / "ref")
    assert [(r["phase"], r["epoch"], r["step"]) for r in got] == \
        [(r["phase"], r["epoch"], r["step"]) for r in want]
    assert [r["train_loss"] for r in got] == [r["train_loss"] for r in want]
    a, b = weights(tmp_path / "run" / "supernet.safetensors"), \
        weights(tmp_path / "ref" / "supernet.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_init_starts_from_a_trained_supernet(tiny_config, tmp_path, digits):
    first = Trainer(config_from_dict(tiny_config(tmp_path / "a")), progress=False,
                    data=digits).run()
    trained = weights(first.checkpoint)
    # a run of zero epochs from `init` ends with the init weights, unchanged
    cfg = tiny_config(tmp_path / "b", [{"task": "full", "epochs": 0, "lr": 0.05}])
    cfg["init"] = str(first.checkpoint)
    res = Trainer(config_from_dict(cfg), progress=False, data=digits).run()
    kept = weights(res.checkpoint)
    assert all(torch.equal(trained[k], kept[k]) for k in trained)
    # and a real phase continues from them: a fresh start lands elsewhere
    more = tiny_config(tmp_path / "c")
    more["init"] = str(first.checkpoint)
    cont = weights(Trainer(config_from_dict(more), progress=False, data=digits).run().checkpoint)
    fresh = weights(Trainer(config_from_dict(tiny_config(tmp_path / "d")), progress=False,
                            data=digits).run().checkpoint)
    assert any(not torch.equal(cont[k], fresh[k]) for k in cont)
    # a checkpoint of another space is refused, naming both spaces
    other = OFASupernet("cifar_mbv3")
    from nas.supernet import save_supernet

    save_supernet(other, tmp_path / "other.safetensors")
    bad = tiny_config(tmp_path / "e")
    bad["init"] = str(tmp_path / "other.safetensors")
    with pytest.raises(Exception, match="cifar_mbv3"):
        Trainer(config_from_dict(bad), progress=False, data=digits).run()
    # and refused before the data is read: with both wrong, the message is about `init`
    both = tiny_config(tmp_path / "f", data={"source": str(tmp_path / "no-such-data")})
    both["init"] = str(tmp_path / "other.safetensors")
    with pytest.raises(Exception, match="cifar_mbv3"):
        Trainer(config_from_dict(both), progress=False).run()


def test_resume_refuses_another_configuration(tiny_config, tmp_path, digits):
    Trainer(config_from_dict(tiny_config(tmp_path / "run")), progress=False, data=digits).run()
    other = config_from_dict(tiny_config(tmp_path / "run", [{"task": "full", "epochs": 1,
                                                             "lr": 0.5}]))
    with pytest.raises(ConfigError, match="another configuration"):
        Trainer(other, progress=False, data=digits).run(resume=True)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_config, tmp_path, digits,
                                                           monkeypatch):
    phases = [{"task": "full", "epochs": 1, "lr": 0.05}, {"task": "kernel", "epochs": 2,
                                                         "lr": 0.02}]
    cfg = config_from_dict(tiny_config(tmp_path / "run", phases))
    real = _T._logits

    def poisoned(self, x):
        out = real(self, x)
        return out * float("nan") if self.progress.phase == 1 else out

    monkeypatch.setattr(_T, "_logits", poisoned)
    with pytest.raises(TrainingError, match=r"loss is nan at phase 1-kernel epoch 1 step 1.*"
                       r"p00-e001\.safetensors .*is kept"):
        Trainer(cfg, progress=False, data=digits).run()
    ck = tmp_path / "run" / "checkpoints"
    latest = json.loads((ck / "latest.json").read_text())
    assert latest["tag"] == "p00-e001"
    net = load_supernet(ck / latest["supernet"])  # loads: intact
    assert all(torch.isfinite(v).all() for v in net.state_dict().values())
    assert not (tmp_path / "run" / "supernet.safetensors").exists()


def test_recalibrate_bn_sets_running_statistics_from_the_batches(digits):
    from nas.train import Preprocess

    net = OFASupernet("tiny").eval()
    sp = net.space
    pre = Preprocess.for_space(sp)
    loader = BatchLoader(digits.train, 16)
    arch = sp.smallest()
    bn = net.blocks[0].expand_bn
    before = bn.running_mean.clone()
    n = recalibrate_bn(net, arch, loader, 2, preprocess=pre)
    assert n == 2
    assert net.active_arch == arch
    mid = net.blocks[0].mid_of[arch.e[0]]
    assert not torch.allclose(bn.running_mean[:mid], before[:mid])
    first = bn.running_mean.clone()
    recalibrate_bn(net, arch, loader, 2, preprocess=pre)
    torch.testing.assert_close(bn.running_mean, first)  # a reset, not an accumulation
    assert bn.momentum == 0.1
    assert not net.training
    # a subnet's statistics differ from the largest's
    recalibrate_bn(net, sp.largest(), loader, 2, preprocess=pre)
    assert not torch.allclose(bn.running_mean[:mid], first[:mid])


def test_config_errors_name_the_key(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("space: tiny\ndata: {source: digits}\nphases:\n  - {task: shrink, epochs: 1, "
                 "lr: 0.1}\n")
    with pytest.raises(ConfigError,
                       match=r"c\.yaml: phases\.0\.task = 'shrink': Input should be 'full'"):
        load_config(f)
    f.write_text("space: tiny\ndata: {source: digits, val_sise: 3}\nphases: []\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: data\.val_sise: unknown field"):
        load_config(f)
    f.write_text("space: tiny\ndata: {source: digits}\nphases:\n  - {task: depth, epochs: 1, "
                 "lr: 0.1, depths: [3]}\n")
    with pytest.raises(ConfigError,
                       match=r"phases\.0\.depths = \[3\]: must be a non-empty subset of \[1, 2\]"):
        load_config(f)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_without_a_progress_bar_the_log_shows_steps_between_epochs(tiny_config, tmp_path,
                                                                    digits):
    from rich.console import Console

    console = Console(record=True, width=200, file=io.StringIO())
    cfg = config_from_dict(tiny_config(tmp_path / "run", [ALL_PHASES[0]]))
    Trainer(cfg, progress=False, data=digits, console=console, log_every_s=0).run()
    lines = [ln for ln in console.export_text().splitlines() if " step " in ln]
    # 3 steps an epoch: a line after steps 1 and 2 (the epoch's own line follows step 3)
    assert [ln.split(" step ")[1].split()[0] for ln in lines] == ["1/3", "2/3"]
    assert all("img/s" in ln and "min left in the epoch" in ln for ln in lines)
    quiet = Console(record=True, file=io.StringIO())
    Trainer(config_from_dict(tiny_config(tmp_path / "q", [ALL_PHASES[0]])), progress=False,
            data=digits, console=quiet).run()
    assert " step " not in quiet.export_text()  # the default: every 5 minutes
