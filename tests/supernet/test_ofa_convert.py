"""OFA's supernet checkpoints to ours and back, checked against OFA's own networks.

The reference is the ``ofa`` package (OFA's code): its ``OFAMobileNetV3`` and
``OFAProxylessNASNets`` with random weights, made lively (random BatchNorm statistics and
affine parameters, perturbed kernel-transform matrices), saved as OFA saves them. The
converted supernet's extracted subnets must give the logits of OFA's ``get_active_subnet``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from ofa_reference import ofa_elastic_networks
from torch import nn

from nas.errors import CheckpointError, UnknownNameError
from nas.space import get_space
from nas.supernet import (
    OFA_SPACES,
    OFASupernet,
    export_ofa_checkpoint,
    import_ofa_checkpoint,
    load_supernet,
    ofa_state_dict,
    save_supernet,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPACES = list(OFA_SPACES)
N_SUBNETS = 20  # per space: the largest, the smallest and 18 random ones
RESOLUTIONS = (128, 144, 160)
TOL = 1e-5  # max |ours - OFA's| / max |OFA's|, float32, eval mode


def _space(name: str) -> str:
    try:
        return get_space(name).name
    except UnknownNameError:
        pytest.skip(f"space {name} is not registered in this version")


def _liven_ofa(net: nn.Module, seed: int = 0) -> None:
    """OFA's net with eval outputs of order 1 and every kind of tensor non-trivial.

    As tests/conftest.py's ``liven`` does for ours: perturbed transform matrices, random
    biases and BatchNorm affine parameters, running statistics from a batch through the
    largest subnet, then noise on them.
    """
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen)

    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("_matrix"):
                p.add_(0.1 * randn(*p.shape))
            elif name.endswith("bias") and p.ndim == 1:
                p.copy_(0.1 * randn(*p.shape))
        for bn in bns:
            bn.weight.copy_(0.5 + torch.rand(bn.num_features, generator=gen))
            bn.bias.copy_(0.2 * randn(bn.num_features))
            bn.reset_running_stats()
            bn.momentum = None  # the one batch sets the statistics
        w = net.classifier.linear.weight  # type: ignore[union-attr]
        w.copy_(randn(*w.shape) * 3 / w.shape[1] ** 0.5)
        # 8 samples: statistics from fewer leave near-dead channels whose tiny variance
        # amplifies float32 rounding beyond the tolerance (in OFA's net and ours alike)
        x = randn(8, 3, 128, 128) + 2 * randn(8, 3, 1, 1)
        net.set_max_net()  # type: ignore[operator]
        net.train()
        net(x)
        net.eval()
        for bn in bns:
            bn.momentum = 0.1
            bn.running_mean.add_(0.1 * randn(bn.num_features))
            bn.running_var.mul_(0.8 + 0.4 * torch.rand(bn.num_features, generator=gen))
            bn.num_batches_tracked.fill_(int(torch.randint(1, 10**6, (1,), generator=gen)))


def _new_ofa(space: str) -> nn.Module:
    cls, width = OFA_SPACES[space]
    # the arguments of OFA's model zoo (ofa/model_zoo.py) for its published supernets
    return getattr(ofa_elastic_networks(), cls)(
        dropout_rate=0, width_mult=width, ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6],
        depth_list=[2, 3, 4])


@functools.cache
def _ofa(space: str) -> nn.Module:
    """One lively OFA supernet per space for the whole module (eval mode)."""
    torch.manual_seed(0)
    net = _new_ofa(space)
    _liven_ofa(net, seed=SPACES.index(space))
    return net.eval()


def _save(state: Any, path: Path, legacy: bool = False) -> Path:
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    return path


def _input(r: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, r, r, generator=gen) + 2 * torch.randn(2, 3, 1, 1, generator=gen)


def _rel(ref: torch.Tensor, got: torch.Tensor) -> float:
    return float((ref - got).abs().max() / ref.abs().max())


@pytest.mark.parametrize("space", SPACES)
def test_converted_subnets_give_ofas_logits(space: str, tmp_path: Path) -> None:
    _space(space)
    ref = _ofa(space)
    state = ref.state_dict()
    # OFA publishes {"state_dict": ...}, in torch's legacy format; both formats, both forms
    net = import_ofa_checkpoint(_save({"state_dict": state}, tmp_path / "a.pth", legacy=True),
                                space)
    bare = import_ofa_checkpoint(_save(state, tmp_path / "b.pth"), space)
    assert net.space.name == space
    assert not net.training
    assert net.checkpoint_meta["ofa_wrapped"]
    assert not bare.checkpoint_meta["ofa_wrapped"]
    assert net.checkpoint_meta["ofa_serialization"] == "legacy"
    for (k, a), b in zip(net.state_dict().items(), bare.state_dict().values(), strict=True):
        assert torch.equal(a, b), k

    sp = net.space
    # the test can fail: a 10% error in one BatchNorm every subnet uses shows
    broken = import_ofa_checkpoint(tmp_path / "b.pth", space)
    with torch.no_grad():
        broken.blocks[2 * sp.max_depth].depthwise_bn.running_var.mul_(1.1)
    archs = [sp.largest(), sp.smallest(), *sp.sample_many(N_SUBNETS - 2, seed=1)]
    worst = 0.0
    for i, arch in enumerate(archs):
        arch = sp.parse({**arch.to_dict(), "r": RESOLUTIONS[i % len(RESOLUTIONS)]})
        a = arch.to_dict()
        ref.set_active_subnet(ks=a["ks"], e=a["e"], d=a["d"])  # type: ignore[operator]
        theirs = ref.get_active_subnet(preserve_weight=True).eval()  # type: ignore[operator]
        ours = net.extract(arch).eval()
        x = _input(arch.r, seed=i)
        with torch.no_grad():
            want, got = theirs(x), ours(x)
            if i < 2:
                # in float64 the two agree to rounding: the same computation on the same
                # weights (float32 rounding, amplified by a random net, is all that differs)
                assert _rel(theirs.double()(x.double()), ours.double()(x.double())) < 1e-12
                assert _rel(want, broken.extract(arch).eval()(x)) > 10 * TOL
        assert got.shape == want.shape == (2, sp.spec.num_classes)
        worst = max(worst, _rel(want, got))
    assert worst <= TOL, f"{space}: max |ours - OFA's| / max |OFA's| = {worst:.2e}"


@pytest.mark.parametrize("space", SPACES)
def test_round_trip_is_exact(space: str, tmp_path: Path) -> None:
    _space(space)
    ref = _ofa(space)
    state = ref.state_dict()
    src = _save({"state_dict": state}, tmp_path / "ofa.pth", legacy=True)
    ck = save_supernet(import_ofa_checkpoint(src, space), tmp_path / "ours.safetensors",
                       meta=import_ofa_checkpoint(src, space).checkpoint_meta)
    back = export_ofa_checkpoint(ck, tmp_path / "back.pth")
    assert back.read_bytes()[:2] == b"\x80\x02"  # legacy, as the source
    loaded = torch.load(back, map_location="cpu", weights_only=True)
    assert list(loaded) == ["state_dict"]
    got = loaded["state_dict"]
    assert list(got) == list(state)  # OFA's names, in OFA's order
    for k, v in state.items():
        assert got[k].dtype == v.dtype, k
        assert torch.equal(got[k], v), k
    # OFA's own network takes it (strict), and the bare form when asked
    _new_ofa(space).load_state_dict(got)
    bare = export_ofa_checkpoint(load_supernet(ck), tmp_path / "bare.pth", wrap=False)
    assert list(torch.load(bare, weights_only=True)) == list(state)


def test_old_block_names_and_no_counters_come_back_as_they_were(tmp_path: Path) -> None:
    # OFA's files of 2019-20 name each block's layer `mobile_inverted_conv` (its code now says
    # `conv`); torch before 0.4.1 wrote no BatchNorm counters
    state = {k.replace(".conv.", ".mobile_inverted_conv.", 1) if k.startswith("blocks.") else k:
             v for k, v in _ofa("ofa_mbv3").state_dict().items()
             if not k.endswith("num_batches_tracked")}
    net = import_ofa_checkpoint(_save({"state_dict": state}, tmp_path / "old.pth"), "ofa_mbv3")
    assert net.checkpoint_meta["ofa_block_name"] == "mobile_inverted_conv"
    back = ofa_state_dict(net)
    assert list(back) == list(state)
    assert all(torch.equal(back[k], v) for k, v in state.items())


class _Trap:
    """Unpickling this would create a folder: the test sees whether any code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.path),))


def _bad_files(tmp: Path) -> list[tuple[Path, str, str]]:
    """(file, --space, what the one line must say)."""
    good = _ofa("ofa_mbv3").state_dict()
    small = {"first_conv.conv.weight": good["first_conv.conv.weight"]}
    zipped = _save({"state_dict": good}, tmp / "good.pth").read_bytes()
    legacy = _save({"state_dict": small}, tmp / "legacy.pth", legacy=True).read_bytes()
    files: list[tuple[str, bytes | Any, str, str]] = [
        ("trunc.pth", zipped[: len(zipped) // 2], "ofa_mbv3", "truncated or corrupt"),
        ("trunc_legacy.pth", legacy[: len(legacy) - 40], "ofa_mbv3", "truncated or corrupt"),
        ("empty.pth", b"", "ofa_mbv3", "is empty"),
        ("text.pth", b"not a checkpoint\n", "ofa_mbv3", "is not a torch file"),
        ("code.pth", {"state_dict": small, "x": _Trap(tmp / "ran")}, "ofa_mbv3",
         "refused unread: it names the Python object posix.mkdir"),
        ("code_legacy.pth", {"state_dict": small, "x": _Trap(tmp / "ran")}, "ofa_mbv3",
         "refused unread"),
        ("list.pth", [good["first_conv.conv.weight"]], "ofa_mbv3", "expected a state_dict"),
        ("ints.pth", {"epoch": 3}, "ofa_mbv3", "state_dict['epoch'] is a int, not a tensor"),
        ("w12.pth", {"state_dict": _ofa("ofa_mbv3_w12").state_dict()}, "ofa_mbv3",
         "first_conv.conv.weight has shape [24, 3, 3, 3], expected [16, 3, 3, 3]; it is the "
         "supernet of space ofa_mbv3_w12"),
        ("missing.pth", {k: v for k, v in good.items() if k != "classifier.linear.bias"},
         "ofa_mbv3", "missing classifier.linear.bias"),
        ("extra.pth", {**good, "classifier.extra": torch.zeros(1)}, "ofa_mbv3",
         "unexpected classifier.extra"),
        ("nan.pth", {**good, "classifier.linear.bias": torch.full((1000,), float("nan"))},
         "ofa_mbv3", "classifier.linear.bias holds NaN or infinite values"),
        ("good.pth", None, "tiny", "--space 'tiny': OFA publishes supernets of ofa_mbv3, "),
    ]
    with (tmp / "bare.pkl").open("wb") as fh:  # a bare pickle, not torch.save's
        pickle.dump(_Trap(tmp / "ran"), fh)
    out = [(tmp / "bare.pkl", "ofa_mbv3", "refused unread")]
    for name, content, space, needle in files:
        path = tmp / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            _save(content, path, legacy="legacy" in name)
        out.append((path, space, needle))
    return out


def test_bad_files_get_one_line_and_nothing_written(tmp_path: Path, run_nas) -> None:
    for path, space, needle in _bad_files(tmp_path):
        out = tmp_path / "out" / "ck.safetensors"
        code, _, err = run_nas(["supernet", "import-ofa", str(path), "--space", space,
                                     "--out", str(out)])
        lines = err.strip().splitlines()
        assert code == 2, (path, err)
        assert len(lines) == 1, (path, err)
        assert lines[0].startswith("error: "), (path, err)
        assert needle in lines[0], (needle, lines[0])
        assert not (tmp_path / "out").exists(), path  # nothing written, not even the folder
    assert not (tmp_path / "ran").exists()  # no pickled code ever ran
    with pytest.raises(CheckpointError, match=r"missing classifier\.linear\.bias"):
        import_ofa_checkpoint(tmp_path / "missing.pth", "ofa_mbv3")


def test_cli_import_info_export(tmp_path: Path, run_nas) -> None:
    state = _ofa("ofa_mbv3").state_dict()
    src = _save({"state_dict": state}, tmp_path / "ofa_mbv3_d234_e346_k357_w1.0")
    ck = tmp_path / "ofa_mbv3.safetensors"
    code, out, err = run_nas(["supernet", "import-ofa", str(src), "-s", "ofa_mbv3",
                              "-o", str(ck), "--json"])
    assert code == 0, err
    report = json.loads(out)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    assert report["space"] == "ofa_mbv3"
    assert report["ofa_sha256"] == sha
    code, out, _ = run_nas(["supernet", "info", str(ck), "--json"])
    extra = json.loads(out)["extra"]
    assert extra["source"] == "converted from OFA"
    assert extra["ofa_file"] == src.name
    assert extra["ofa_sha256"] == sha
    back = tmp_path / "back.pth"
    code, out, err = run_nas(["supernet", "export-ofa", str(ck), "-o", str(back)])
    assert code == 0, err
    assert "475" in out, err
    assert back.is_file(), err
    got = torch.load(back, weights_only=True)["state_dict"]
    assert list(got) == list(state)
    assert all(torch.equal(got[k], state[k]) for k in state)
    # a space OFA has no supernet of: one line, no file
    tiny = save_supernet(OFASupernet("tiny"), tmp_path / "tiny.safetensors")
    code, _, err = run_nas(["supernet", "export-ofa", str(tiny), "-o", str(tmp_path / "t.pth")])
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "no OFA counterpart" in err
    assert not (tmp_path / "t.pth").exists()
