"""Export: ONNX + weights + manifest, verification, atomicity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from published import OFA_SUBNET

from nas.errors import ExportError
from nas.export import export_subnet, load_export, verify_export
from nas.space import get_space
from nas.supernet import OFASupernet


def onnx_graph_macs(path: Path) -> int:
    """Independent MAC count: Conv/Gemm/MatMul nodes of the ONNX graph at batch 1."""
    model = onnx.load(str(path))
    for vi in list(model.graph.input) + list(model.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_value = 1
    model = onnx.shape_inference.infer_shapes(model)
    g = model.graph
    shapes = {
        vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
        for vi in [*g.value_info, *g.input, *g.output]
    }
    inits = {t.name: list(t.dims) for t in g.initializer}
    for t in g.initializer:
        shapes.setdefault(t.name, list(t.dims))
    total = 0
    for node in g.node:
        if node.op_type == "Conv":
            _cout, cin_per_group, kh, kw = inits[node.input[1]]
            _n, c, h, w = shapes[node.output[0]]
            total += c * h * w * cin_per_group * kh * kw
        elif node.op_type == "Gemm":
            m, k = shapes[node.input[0]]
            b = shapes[node.input[1]]
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            total += m * k * (b[0] if trans_b else b[1])
        elif node.op_type == "MatMul":
            a, b = shapes[node.input[0]], shapes[node.input[1]]
            total += int(np.prod(a)) * b[-1]
    return total


@pytest.fixture(scope="module")
def ofa_net() -> OFASupernet:
    torch.manual_seed(0)
    net = OFASupernet("ofa_mbv3")
    net.calibrate_random(batch_size=2, n_batches=1)
    return net.eval()


@pytest.fixture(scope="module")
def tiny_net() -> OFASupernet:
    torch.manual_seed(0)
    net = OFASupernet("tiny")
    net.calibrate_random()
    return net.eval()


@pytest.mark.slow
def test_published_ofa_subnet_exports_verifies_and_macs_match_graph(ofa_net, tmp_path):
    out = tmp_path / "pub"
    res = export_subnet(ofa_net, OFA_SUBNET, out)
    m = res.manifest
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json", "model.onnx", "weights.safetensors"]
    assert m["arch"] == get_space("ofa_mbv3").parse(OFA_SUBNET).to_dict()
    assert m["macs"] == onnx_graph_macs(out / "model.onnx")
    assert m["verification"]["max_abs_diff"] <= 1e-4
    assert m["opset"] >= 17
    # the verification compared outputs that are not vanishingly small
    assert m["verification"]["output_abs_mean"] > 1e-3


def test_manifest_tells_a_consumer_how_to_feed_the_model(tiny_net, tmp_path):
    arch = tiny_net.space.sample(1)
    m = export_subnet(tiny_net, arch, tmp_path / "e").manifest
    on_disk = json.loads((tmp_path / "e" / "manifest.json").read_text())
    assert on_disk == m
    pre = m["preprocessing"]
    assert pre["resolution"] == arch.r
    assert pre["channel_order"] == "RGB"
    assert len(pre["mean"]) == 3
    assert len(pre["std"]) == 3
    assert pre["scale"] == pytest.approx(1 / 255)
    assert m["inputs"][0]["shape"] == ["batch", 3, arch.r, arch.r]
    assert m["arch_hash"] == arch.hash
    assert set(m["versions"]) >= {"torch", "onnx", "onnxruntime", "nas"}
    import hashlib
    for name, info in m["files"].items():
        assert hashlib.sha256((tmp_path / "e" / name).read_bytes()).hexdigest() == info["sha256"]


def test_onnx_model_has_dynamic_batch_and_matches_torch(tiny_net, tmp_path):
    arch = tiny_net.space.sample(2)
    export_subnet(tiny_net, arch, tmp_path / "e")
    sess = ort.InferenceSession(str(tmp_path / "e" / "model.onnx"))
    x = np.random.default_rng(0).standard_normal((5, 3, arch.r, arch.r)).astype(np.float32)
    got = sess.run(None, {"input": x})[0]
    sub, _ = load_export(tmp_path / "e")
    with torch.no_grad():
        want = sub(torch.from_numpy(x)).numpy()
    assert got.shape == (5, 10)
    assert np.abs(got - want).max() <= 1e-4


def test_failed_verification_leaves_nothing_behind(tiny_net, tmp_path):
    out = tmp_path / "e"
    with pytest.raises(ExportError, match="differs from torch"):
        export_subnet(tiny_net, tiny_net.space.sample(3), out, rtol=-1.0)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_nonempty_out_is_refused_and_kept(tiny_net, tmp_path):
    out = tmp_path / "e"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not empty"):
        export_subnet(tiny_net, tiny_net.space.sample(4), out)
    assert (out / "precious.txt").read_text() == "keep me"
    # --overwrite replaces an export folder, never a folder of the user's files
    with pytest.raises(ExportError, match=r"not part of an export \(precious\.txt\)"):
        export_subnet(tiny_net, tiny_net.space.sample(4), out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["precious.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e"]
    (out / "precious.txt").unlink()
    export_subnet(tiny_net, tiny_net.space.sample(4), out)
    first = json.loads((out / "manifest.json").read_text())
    export_subnet(tiny_net, tiny_net.space.sample(8), out, overwrite=True)
    assert json.loads((out / "manifest.json").read_text())["arch_hash"] != first["arch_hash"]
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json", "model.onnx", "weights.safetensors"]


def test_failed_overwrite_keeps_previous_export(tiny_net, tmp_path):
    out = tmp_path / "e"
    first = export_subnet(tiny_net, tiny_net.space.sample(5), out).manifest
    with pytest.raises(ExportError):
        export_subnet(tiny_net, tiny_net.space.sample(6), out, overwrite=True, rtol=-1.0)
    assert json.loads((out / "manifest.json").read_text()) == first
    verify_export(out)


def test_verify_export_detects_tampering(tiny_net, tmp_path):
    out = tmp_path / "e"
    export_subnet(tiny_net, tiny_net.space.sample(7), out)
    assert verify_export(out)["max_abs_diff"] <= 1e-4
    with (out / "model.onnx").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(ExportError, match="sha256"):
        verify_export(out)


def test_load_export_rejects_folder_without_manifest(tmp_path):
    with pytest.raises(ExportError, match=r"manifest\.json is missing"):
        load_export(tmp_path)
