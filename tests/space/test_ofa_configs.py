"""OFA's published specialized subnets (net.config + run.config) convert to architectures."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from nas.errors import ArchitectureError
from nas.space import arch_from_ofa_config, get_space, read_ofa_subnet

SPECIALIZED = Path(__file__).resolve().parents[3] / "shared" / "ofa" / "ofa_specialized"
FOLDERS = sorted(SPECIALIZED.iterdir()) if SPECIALIZED.is_dir() else []
needs_files = pytest.mark.skipif(not FOLDERS, reason=f"{SPECIALIZED} is not here")


def _name(cfg_dir: Path) -> str:
    return json.loads((cfg_dir / "net.config").read_text())["name"]


@needs_files
def test_the_34_mobilenetv3_configs_convert_and_the_16_proxylessnas_are_refused() -> None:
    done, refused = [], []
    for folder in FOLDERS:
        if _name(folder) == "ProxylessNASNets":
            with pytest.raises(ArchitectureError, match=r"ofa_proxyless.*not supported yet"):
                read_ofa_subnet(folder)
            refused.append(folder)
            continue
        a = read_ofa_subnet(folder)
        sp = get_space(a.space)
        cfg = json.loads((folder / "net.config").read_text())
        r = json.loads((folder / "run.config").read_text())["image_size"]
        assert a.r == r and sum(a.d) == len(cfg["blocks"]) - 1
        assert [(k, x) for _s, _i, k, x in a.active_layers()] == [
            (b["mobile_inverted_conv"]["kernel_size"], b["mobile_inverted_conv"]["expand_ratio"])
            for b in cfg["blocks"][1:]]
        # priced without a model: the FLOPs budgets OFA published are our MACs
        macs = int(sp.costs([a])["macs"][0])
        m = re.match(r"flops-(\d+)M", folder.name)
        if m:
            assert round(macs / 1e6) == int(m.group(1))
        done.append(a)
    # (OFA publishes 34 + 16, not the 30 + 20 its folder README says)
    assert len(done) == 34 and len(refused) == 16
    spaces = {a.space for a in done}
    assert spaces == {"ofa_mbv3", "ofa_mbv3_w12"}
    off = [a for a in done if a.r not in get_space(a.space).resolutions]
    assert sorted(a.r for a in off) == [228, 236, 240, 260]


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


@needs_files
def test_resolutions_off_the_grid_convert_but_searches_keep_to_the_grid() -> None:
    a = arch_from_ofa_config(_cfg(), 260)
    sp = get_space("ofa_mbv3")
    assert a.r == 260 and sp.parse(a, off_grid=True) == a
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
    assert row["space"] == "ofa_mbv3_w12" and row["arch"]["r"] == 260 and not row["on_grid"]
    assert json.loads((tmp_path / "a.json").read_text()) == row["arch"]
    proxyless = next(f for f in FOLDERS if _name(f) == "ProxylessNASNets")
    with pytest.raises(SystemExit) as done:
        main(["arch", "from-ofa", str(proxyless)])
    err = capsys.readouterr().err
    assert done.value.code == 2 and err.count("\n") == 1 and "not supported yet" in err
