"""OFA's published accuracy predictor, converted: equal to OFA's own, shipped, a proxy by name,
and a converter that refuses what it cannot convert."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from ofa_reference import OFA_FILES, ofa_accuracy_predictor

from nas.errors import ArchitectureError, ConfigError
from nas.proxies import (
    ProxyContext,
    get_proxy,
    load_accuracy_predictor,
    make_accuracy_predictor,
)
from nas.proxies._ofa import (
    OFAAccuracyPredictor,
    import_ofa_accuracy_predictor,
    shipped_accuracy_predictor_path,
)
from nas.space import get_space

PTH = OFA_FILES / "acc_predictor.pth"
needs_pth = pytest.mark.skipif(not PTH.is_file(), reason=f"{PTH} is not here")
SP = get_space("ofa_mbv3")


def _specs(archs: list) -> list[dict]:
    return [{"ks": list(a.ks), "e": list(a.e), "d": list(a.d), "r": [a.r]} for a in archs]


@needs_pth
def test_converted_predictor_equals_ofa_on_1000_random_subnets(tmp_path: Path) -> None:
    ref = ofa_accuracy_predictor(PTH)
    est = load_accuracy_predictor(import_ofa_accuracy_predictor(PTH, tmp_path / "p.json"))
    archs = SP.sample_many(1000, seed=18)
    archs += [SP.largest(), SP.smallest(), SP.largest(r=128), SP.smallest(r=224)]
    ours = est.predict(archs)
    theirs = ref.predict_accuracy(_specs(archs)).numpy().ravel().astype(np.float64)
    diff = float(np.abs(ours - theirs).max())
    print(f"max |ours - OFA| over {len(archs)} subnets: {diff:.3g}")
    assert diff <= 1e-6
    assert 0.5 < ours.min()
    assert ours.max() < 1.0


@needs_pth
def test_the_shipped_conversion_is_of_ofas_file_and_says_so() -> None:
    from nas._io import sha256_file

    path = shipped_accuracy_predictor_path()
    info = json.loads(path.read_text())["info"]
    assert info["sha256"] == sha256_file(PTH)
    assert "MIT" in info["license"]
    assert "han-cai/files" in info["source"]
    ref = ofa_accuracy_predictor(PTH)
    archs = SP.sample_many(50, seed=3)
    np.testing.assert_allclose(load_accuracy_predictor(path).predict(archs),
                               ref.predict_accuracy(_specs(archs)).numpy().ravel(), atol=1e-6)


def _torch_mlp(layers: list) -> torch.nn.Sequential:
    mods: list[torch.nn.Module] = []
    for i, (w, b) in enumerate(layers):
        lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w))
            if b is not None:
                lin.bias.copy_(torch.from_numpy(b))
        mods += [lin, torch.nn.ReLU()] if i < len(layers) - 1 else [lin]
    return torch.nn.Sequential(*mods).eval()


def test_the_shipped_predictor_runs_in_numpy_as_torch_runs_its_mlp() -> None:
    """A prediction imports no torch (the MLP runs in numpy, float32): torch's
    ``nn.Sequential`` on the same weights gives the same accuracies within 1e-6."""
    est = load_accuracy_predictor(shipped_accuracy_predictor_path())
    archs = [*SP.sample_many(2000, seed=5), SP.largest(), SP.smallest()]
    with torch.no_grad():
        out = _torch_mlp(est.layers_)(torch.from_numpy(est.encode(archs)))
    ref = out.squeeze(1).double().numpy() * est.y_scale_ + est.base_acc_
    ours = est.predict(archs)
    assert ours.dtype == np.float64
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)
    assert len(np.unique(ours)) > 1000  # a real spread, not a constant


def test_a_fitted_mlp_predicts_in_numpy_as_its_torch_net() -> None:
    """Trained in torch, the MLP keeps its weights as numpy arrays and predicts with them;
    its JSON round trip gives the same predictions bit for bit."""
    from nas.proxies import accuracy_predictor_from_state, accuracy_predictor_state

    tiny = get_space("tiny")
    archs = tiny.sample_many(40, seed=0)
    y = np.linspace(0.5, 0.7, 40)
    est = make_accuracy_predictor("mlp", space="tiny", epochs=20).fit(archs, y)
    probe = tiny.sample_many(200, seed=1)
    with torch.no_grad():
        out = _torch_mlp(est.layers_)(torch.from_numpy(est.encode(probe)))
    ref = out.squeeze(1).double().numpy() * est.y_scale_ + est.base_acc_
    np.testing.assert_allclose(est.predict(probe), ref, rtol=0, atol=1e-6)
    back = accuracy_predictor_from_state(json.loads(json.dumps(accuracy_predictor_state(est))))
    np.testing.assert_array_equal(back.predict(probe), est.predict(probe))


def test_ofa_imagenet_proxy_needs_no_supernet_nor_data_and_keeps_to_ofa_mbv3() -> None:
    proxy = get_proxy("ofa-imagenet")
    archs = SP.sample_many(5, seed=1)
    scores = proxy.score(archs, ProxyContext(space=SP))
    expect = load_accuracy_predictor(shipped_accuracy_predictor_path()).predict(archs)
    np.testing.assert_array_equal(scores, expect)
    # an off-grid deployment resolution inside OFA's buckets is scored as OFA would
    off = SP.parse({**archs[0].to_dict(), "r": 236}, off_grid=True)
    assert np.isfinite(load_accuracy_predictor(shipped_accuracy_predictor_path())
                       .predict([off])).all()
    for other in ("ofa_mbv3_w12", "tiny"):
        sp = get_space(other)
        with pytest.raises(ConfigError, match="predicts for space ofa_mbv3 only") as info:
            proxy.score(sp.sample_many(2, seed=0), ProxyContext(space=sp))
        assert "\n" not in str(info.value)


def test_a_resolution_outside_ofas_buckets_is_one_line() -> None:
    est = load_accuracy_predictor(shipped_accuracy_predictor_path())
    off = SP.parse({**SP.largest().to_dict(), "r": 260}, off_grid=True)
    with pytest.raises(ArchitectureError, match=r"r must be in \[112, 239\].*got 260"):
        est.predict([off])


def test_the_kind_fits_and_encodes_any_space_with_its_own_buckets() -> None:
    tiny = get_space("tiny")
    est = make_accuracy_predictor("ofa", space="tiny", epochs=5)
    assert isinstance(est, OFAAccuracyPredictor)
    archs = tiny.sample_many(10, seed=0)
    X = est.encode(archs)
    assert X.shape == (10, est.encoding_size())
    assert np.all(X[:, -est._buckets(tiny)[2]:].sum(1) == 1)
    est.fit(archs, np.linspace(0.5, 0.7, 10))
    assert est.predict(archs).shape == (10,)


# ---------------------------------------------------------------------- bad files
def _write_sd(path: Path, sd: dict, legacy: bool = True) -> Path:
    buf = io.BytesIO()
    torch.save(sd, buf, _use_new_zipfile_serialization=not legacy)
    path.write_bytes(buf.getvalue())
    return path


class _Evil:
    def __reduce__(self) -> tuple:
        return (print, ("pwned",))


def _good_sd() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    shapes = [(400, 128), (400, 400), (400, 400), (1, 400)]
    sd = {}
    for i, (o, n) in enumerate(shapes):
        sd[f"{2 * i}.weight"] = torch.randn(o, n, generator=g) * 0.05
        sd[f"{2 * i}.bias"] = torch.zeros(o)
    return sd


@pytest.mark.parametrize("legacy", [True, False])
def test_any_state_dict_in_ofas_layout_converts(tmp_path: Path, legacy: bool) -> None:
    src = _write_sd(tmp_path / "p.pth", _good_sd(), legacy)
    est = load_accuracy_predictor(import_ofa_accuracy_predictor(src, tmp_path / "p.json"))
    ref = ofa_accuracy_predictor(src)
    archs = SP.sample_many(20, seed=2)
    np.testing.assert_allclose(est.predict(archs),
                               ref.predict_accuracy(_specs(archs)).numpy().ravel(), atol=1e-6)


def _bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    good = _write_sd(tmp / "good.pth", _good_sd())
    data = good.read_bytes()
    (tmp / "truncated.pth").write_bytes(data[: len(data) // 2])
    (tmp / "evil.pth").write_bytes(pickle.dumps({"0.weight": _Evil()}))
    wrong = _good_sd()
    wrong["0.weight"] = torch.zeros(400, 145)
    nan = _good_sd()
    nan["2.bias"][3] = float("nan")
    extra = _good_sd()
    extra["0.running_mean"] = torch.zeros(400)
    return {
        "truncated": (tmp / "truncated.pth", "not a weights-only torch file"),
        "code": (tmp / "evil.pth", "not a weights-only torch file"),
        "shape": (_write_sd(tmp / "shape.pth", wrong), r"0.weight has shape \[400, 145\]"),
        "nan": (_write_sd(tmp / "nan.pth", nan), "NaN or infinite"),
        "key": (_write_sd(tmp / "key.pth", extra), "'0.running_mean' is not a Linear"),
        "tensor": (_write_sd(tmp / "tensor.pth", {"x": 1}), "is not a Linear"),
        "missing": (tmp / "nope.pth", "not found"),
    }


@pytest.mark.parametrize("case", ["truncated", "code", "shape", "nan", "key", "tensor",
                                  "missing"])
def test_bad_files_are_one_line_and_nothing_is_written(tmp_path: Path, case: str,
                                                       capsys: pytest.CaptureFixture) -> None:
    src, msg = _bad_files(tmp_path)[case]
    out = tmp_path / "out" / "p.json"
    with pytest.raises(ConfigError, match=msg) as info:
        import_ofa_accuracy_predictor(src, out)
    assert "\n" not in str(info.value)
    assert not out.exists()
    assert not out.parent.exists()
    assert "pwned" not in capsys.readouterr().out


def test_cli_imports_and_refuses_in_one_line(tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    from nas.cli import main

    src = _write_sd(tmp_path / "p.pth", _good_sd())
    with pytest.raises(SystemExit) as done:
        main(["accuracy", "import-ofa", str(src), "--out", str(tmp_path / "p.json")])
    assert done.value.code == 0
    assert load_accuracy_predictor(tmp_path / "p.json").kind == "ofa"
    (tmp_path / "bad.pth").write_bytes(pickle.dumps({"0.weight": _Evil()}))
    with pytest.raises(SystemExit) as exit_:
        main(["accuracy", "import-ofa", str(tmp_path / "bad.pth"), "--out",
              str(tmp_path / "bad.json")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert not (tmp_path / "bad.json").exists()
    assert err.count("\n") == 1
    assert "weights_only=False" not in err
    assert "pwned" not in err
