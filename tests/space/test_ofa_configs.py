"""OFA's published specialized subnets (net.config + run.config) convert to architectures,
and export."""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path

import pytest
import torch

from nas.errors import ArchitectureError
from nas.space import Architecture, arch_from_ofa_config, get_space, read_ofa_subnet

SPECIALIZED = Path(__file__).resolve().parents[3] / "shared" / "ofa" / "ofa_specialized"
FOLDERS = sorted(SPECIALIZED.iterdir()) if SPECIALIZED.is_dir() else []
needs_files = pytest.mark.skipif(not FOLDERS, reason=f"{SPECIALIZED} is not here")


def _name(cfg_dir: Path) -> str:
    return json.loads((cfg_dir / "net.config").read_text())["name"]


@needs_files
def test_all_50_published_configs_convert() -> None:
    done: dict[str, list[Architecture]] = {"MobileNetV3": [], "ProxylessNASNets": []}
    for folder in FOLDERS:
        a = read_ofa_subnet(folder)
        sp = get_space(a.space)
        cfg = json.loads((folder / "net.config").read_text())
        r = json.loads((folder / "run.config").read_text())["image_size"]
        assert a.r == r
        assert len(a.active_layers()) == len(cfg["blocks"]) - 1
        assert [(k, x) for _s, _i, k, x in a.active_layers()] == [
            (b["mobile_inverted_conv"]["kernel_size"], b["mobile_inverted_conv"]["expand_ratio"])
            for b in cfg["blocks"][1:]]
        # the stage of every block: its width is the stage's
        assert [sp.spec.stages[s].channels for s, _i, _k, _x in a.active_layers()] == [
            b["mobile_inverted_conv"]["out_channels"] for b in cfg["blocks"][1:]]
        # priced without a model: the FLOPs budgets OFA published are our MACs
        macs = int(sp.costs([a])["macs"][0])
        m = re.match(r"flops-(\d+)M", folder.name)
        if m:
            assert round(macs / 1e6) == int(m.group(1))
        done[cfg["name"]].append(a)
    # (OFA publishes 34 + 16, not the 30 + 20 its folder README says)
    assert len(done["MobileNetV3"]) == 34
    assert len(done["ProxylessNASNets"]) == 16
    assert {a.space for a in done["MobileNetV3"]} == {"ofa_mbv3", "ofa_mbv3_w12"}
    assert {a.space for a in done["ProxylessNASNets"]} == {"ofa_proxyless"}
    assert all(len(a.d) == 5 and len(a.ks) == 21 for a in done["ProxylessNASNets"])
    off = [a for v in done.values() for a in v if a.r not in get_space(a.space).resolutions]
    assert sorted(a.r for a in off) == [228, 236, 240, 260]


@pytest.fixture(scope="module")
def supernets() -> dict[str, object]:
    """One random-weight, calibrated supernet per OFA space (order-1 logits, so that a
    verification compares something)."""
    from nas.supernet import OFASupernet

    nets = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # faster on a busy machine, as one_torch_thread
    try:
        for i, name in enumerate(("ofa_mbv3", "ofa_mbv3_w12", "ofa_proxyless")):
            torch.manual_seed(i)
            net = OFASupernet(name)
            net.calibrate_random(n_batches=1, batch_size=2)
            nets[name] = net.eval()
    finally:
        torch.set_num_threads(threads)
    return nets


#: set to 1 to export every published subnet to ONNX (46 distinct: ~22 s of CPU, ~0.45 s a
#: subnet, nearly all of it torch.onnx.export's TorchScript passes, whatever the resolution);
#: by default the representative ones (:func:`_representative`) are
ALL_EXPORTS = os.environ.get("NAS_TEST_ALL_OFA_EXPORTS") == "1"


def _representative(archs: list[Architecture]) -> list[Architecture]:
    """The shallowest and deepest ProxylessNAS subnets, the shallowest MobileNetV3 one and
    one fine-tuned off the search grid (ofa_mbv3_w12 at 260; what the other off-grid ones
    add is their input size, which changes no code path)."""
    def depth(a: Architecture) -> tuple[int, int]:
        return len(a.active_layers()), a.r

    proxyless = [a for a in archs if a.space == "ofa_proxyless"]
    mbv3 = [a for a in archs if a.space == "ofa_mbv3"]
    return [min(proxyless, key=depth), max(proxyless, key=depth), min(mbv3, key=depth),
            next(a for a in archs if a.r == 260)]


@needs_files
@pytest.mark.usefixtures("one_torch_thread")
def test_published_subnets_export_to_onnx_and_verify(supernets, tmp_path) -> None:
    """Published subnets to ONNX and through ONNX Runtime against torch at batch 1: the
    representative ones (all 46 with NAS_TEST_ALL_OFA_EXPORTS=1); the off-grid one through
    the whole export folder (files, manifest, reloaded at 260 and verified again)."""
    from nas.export import export_subnet, onnx_bytes, verify_export, verify_onnx

    archs = list(dict.fromkeys(read_ofa_subnet(f) for f in FOLDERS))
    assert len(archs) == 46  # OFA published 4 architectures twice
    *picked, off = _representative(archs)
    with torch.no_grad():
        for a in archs if ALL_EXPORTS else picked:
            sub = supernets[a.space].extract(a).eval()
            assert sum(p.numel() for p in sub.parameters()) == get_space(a.space).params(a)
            v = verify_onnx(onnx_bytes(sub, a.r), sub, a.r, batch=1)
            assert v["max_abs_diff"] <= v["allowed"], a
            assert v["output_abs_mean"] > 1e-2, a
    res = export_subnet(supernets[off.space], off, tmp_path / "off")
    assert res.manifest["arch"] == off.to_dict()
    assert res.manifest["resolution"] == 260
    assert res.manifest["verification"]["output_abs_mean"] > 1e-2
    assert verify_export(tmp_path / "off")["space"] == "ofa_mbv3_w12"


@needs_files
def test_table_latency_of_the_published_note10_subnets_next_to_their_names() -> None:
    from nas.latency._table import shipped_table

    rows = []
    for folder in FOLDERS:
        if _name(folder) == "ProxylessNASNets":
            continue
        a = read_ofa_subnet(folder)
        est = shipped_table("note10", a.space)
        assert est is not None
        ms = (f"{est.predict([a])[0]:6.2f}" if a.r in (160, 176, 192, 208, 224)
              else "  (r off the table)")
        rows.append(f"{folder.name:42s} {a.space:13s} r={a.r}  note10 table {ms} ms")
    print("\n" + "\n".join(rows))


def _cfg() -> dict:
    folder = next(f for f in FOLDERS if f.name.startswith("note10_lat-8ms"))
    return json.loads((folder / "net.config").read_text())


@needs_files
@pytest.mark.parametrize(("change", "message"), [
    (lambda c: c.update(name="ResNet"), "name = 'ResNet': must be 'MobileNetV3'"),
    (lambda c: c["first_conv"].update(out_channels=32), "matches no space"),
    (lambda c: c["blocks"][1]["mobile_inverted_conv"].update(kernel_size=9),
     r"blocks\[1\]: kernel_size = 9: must be one of \[3, 5, 7\]"),
    (lambda c: c["blocks"][1]["mobile_inverted_conv"].update(expand_ratio=2),
     r"blocks\[1\]: expand_ratio = 2"),
    (lambda c: c["blocks"][1]["mobile_inverted_conv"].update(use_se=True), "act_func/use_se"),
    (lambda c: c["blocks"].pop(2), r"stage 1 \(24 channels\) has 1 blocks"),
    (lambda c: c.pop("blocks"), "missing field 'blocks'"),
])
def test_bad_configs_are_one_line_naming_the_field(change, message) -> None:
    cfg = copy.deepcopy(_cfg())
    change(cfg)
    with pytest.raises(ArchitectureError, match=message) as info:
        arch_from_ofa_config(cfg, 160)
    assert "\n" not in str(info.value)


def _proxyless_cfg() -> dict:
    folder = next(f for f in FOLDERS if f.name.startswith("cpu_lat-10ms"))
    return json.loads((folder / "net.config").read_text())


def _conv(c: dict, i: int) -> dict:
    return c["blocks"][i]["mobile_inverted_conv"]


@needs_files
@pytest.mark.parametrize(("change", "message"), [
    # ProxylessNAS at width 1.0 (OFA's ofa_proxyless_d234_e346_k357_w1): another space
    (lambda c: c["first_conv"].update(out_channels=32),
     r"first_conv\.out_channels = 32: space ofa_proxyless .*width 1\.3.* has 40"),
    (lambda c: c["feature_mix_layer"].update(out_channels=1280),
     r"feature_mix_layer\.out_channels = 1280: space ofa_proxyless .* has 1664"),
    (lambda c: c.pop("feature_mix_layer"), "missing field 'feature_mix_layer'"),
    (lambda c: _conv(c, 1).update(in_channels=16), r"blocks\[1\]: in_channels = 16"),
    (lambda c: _conv(c, 1).update(act_func="h_swish"), "act_func/use_se = h_swish"),
    (lambda c: _conv(c, 1).update(mid_channels=100),
     r"blocks\[1\]: mid_channels = 100: space ofa_proxyless has 96"),
    (lambda c: c["blocks"].append(copy.deepcopy(c["blocks"][-1])),
     r"blocks\[13\]: in_channels = 248: stage 6 of space ofa_proxyless has 416"),
    (lambda c: c["blocks"].pop(), r"stage 6 \(416 channels\) has 0 blocks: must be one of \[1\]"),
])
def test_bad_proxylessnas_configs_are_one_line_naming_the_field(change, message) -> None:
    cfg = copy.deepcopy(_proxyless_cfg())
    assert arch_from_ofa_config(cfg, 144).space == "ofa_proxyless"
    change(cfg)
    with pytest.raises(ArchitectureError, match=message) as info:
        arch_from_ofa_config(cfg, 144)
    assert "\n" not in str(info.value)


@needs_files
def test_resolutions_off_the_grid_convert_but_searches_keep_to_the_grid() -> None:
    a = arch_from_ofa_config(_cfg(), 260)
    sp = get_space("ofa_mbv3")
    assert a.r == 260
    assert sp.parse(a, off_grid=True) == a
    with pytest.raises(ArchitectureError, match=r"r must be one of 128\.\.224"):
        sp.parse(a)
    with pytest.raises(ArchitectureError, match=r"must be an int in \[32, 1024\]"):
        arch_from_ofa_config(_cfg(), 4000)
    assert all(sp.sample(seed=i).r in sp.resolutions for i in range(50))


def test_cli_from_ofa(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from nas.cli import main

    if not FOLDERS:
        pytest.skip(f"{SPECIALIZED} is not here")
    folder = next(f for f in FOLDERS if f.name.startswith("note10_lat-64ms"))
    with pytest.raises(SystemExit) as done:
        main(["arch", "from-ofa", str(folder), "--json", "--out", str(tmp_path / "a.json")])
    assert done.value.code == 0
    row = json.loads(capsys.readouterr().out)
    assert row["space"] == "ofa_mbv3_w12"
    assert row["arch"]["r"] == 260
    assert not row["on_grid"]
    assert json.loads((tmp_path / "a.json").read_text()) == row["arch"]
    proxyless = next(f for f in FOLDERS if _name(f) == "ProxylessNASNets")
    with pytest.raises(SystemExit) as done:
        main(["arch", "from-ofa", str(proxyless), "--json"])
    assert done.value.code == 0
    row = json.loads(capsys.readouterr().out)
    assert row["space"] == "ofa_proxyless"
    assert row["on_grid"]
    assert get_space("ofa_proxyless").parse(row["arch"]) == read_ofa_subnet(proxyless)
    # a ProxylessNAS of another width: one line naming the field, nothing written
    bad = tmp_path / "w10"
    bad.mkdir()
    cfg = json.loads((proxyless / "net.config").read_text())
    cfg["first_conv"]["out_channels"] = 32
    (bad / "net.config").write_text(json.dumps(cfg))
    (bad / "run.config").write_text((proxyless / "run.config").read_text())
    with pytest.raises(SystemExit) as done:
        main(["arch", "from-ofa", str(bad), "--out", str(tmp_path / "b.json")])
    err = capsys.readouterr().err
    assert done.value.code == 2
    assert err.count("\n") == 1
    assert "first_conv.out_channels = 32" in err
    assert not (tmp_path / "b.json").exists()
