"""OFA's Note10 lookup tables as the ``note10`` device: equal to OFA's LatencyTable, shipped,
found by load_predictor, refusing resolutions it lacks and kinds that cannot apply."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from ofa_reference import OFA_FILES, ofa_latency_table

from nas.db import LatencyDB
from nas.devices import get_device
from nas.errors import ArchitectureError, ConfigError
from nas.latency import fit_predictor, load_predictor, predictor_from_state
from nas.latency._table import TablePredictor, import_lut, shipped_table, shipped_table_path
from nas.space import get_space

NOTE10 = OFA_FILES / "note10"
needs_tables = pytest.mark.skipif(not NOTE10.is_dir(), reason=f"{NOTE10} is not here")
RES = (160, 176, 192, 208, 224)


def _spec(a) -> dict:
    return {"ks": list(a.ks), "e": list(a.e), "d": list(a.d), "r": [a.r]}


@needs_tables
@pytest.mark.parametrize("space", ["ofa_mbv3", "ofa_mbv3_w12"])
def test_table_equals_ofas_latency_table_on_1000_subnets_at_each_resolution(
        space: str, tmp_path: Path) -> None:
    ref = ofa_latency_table(NOTE10)
    sp = get_space(space)
    db = LatencyDB(tmp_path / "db.sqlite")
    imported = import_lut(NOTE10, "note10", space, db=db)
    stored = load_predictor("note10", space, "table", db=db)
    worst = 0.0
    for r in RES:
        archs = [sp.parse({**a.to_dict(), "r": r}) for a in sp.sample_many(1000, seed=r)]
        archs += [sp.largest(r=r), sp.smallest(r=r)]
        theirs = np.asarray([ref.predict_efficiency(_spec(a)) for a in archs])
        for est in (imported, stored, shipped_table("note10", space)):
            assert est is not None
            diff = float(np.abs(est.predict(archs) - theirs).max())
            worst = max(worst, diff)
    print(f"{space}: max |ours - OFA LatencyTable| over 5 x 1,002 subnets: {worst:.3g} ms")
    assert worst <= 1e-6


def test_shipped_note10_states_provenance_and_is_found_without_a_database(
        tmp_path: Path) -> None:
    table = json.loads(shipped_table_path("note10").read_text())
    assert "MIT" in table["provenance"]["license"]
    assert "han-cai/files" in table["provenance"]["source"]
    profile = get_device("note10")
    assert profile.external
    assert profile.resolutions == list(RES)
    assert table["resolutions"] == list(RES)
    est = load_predictor("note10", "ofa_mbv3", db=LatencyDB(tmp_path / "empty.sqlite"))
    assert isinstance(est, TablePredictor)
    sp = get_space("ofa_mbv3")
    assert est.predict([sp.largest()])[0] > est.predict([sp.smallest(r=160)])[0] > 0


def test_a_resolution_the_table_lacks_is_one_line_naming_those_it_has() -> None:
    est = shipped_table("note10", "ofa_mbv3")
    assert est is not None
    sp = get_space("ofa_mbv3")
    with pytest.raises(ArchitectureError, match=r"r must be one of \[160, 176, 192, 208, "
                                                r"224\].*got 200") as info:
        est.predict([sp.largest(r=224), sp.largest(r=200)])
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="prices spaces"):
        shipped_table("note10", "tiny")


def test_kinds_that_cannot_apply_refuse_at_once_and_name_those_that_can(
        tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    for kind in ("lut", "hybrid"):
        with pytest.raises(ConfigError, match=f"kind '{kind}' times blocks on the device, "
                                              "and note10 is external") as info:
            fit_predictor("note10", "ofa_mbv3", kind, db=db)
        assert "kinds that can be fitted for note10: " in str(info.value)
        assert "lut" not in str(info.value).split("fitted for note10: ")[1]
    with pytest.raises(ConfigError, match="kind 'table' is imported, not fitted"):
        fit_predictor("note10", "ofa_mbv3", "table", db=db)
    assert not db.exists()  # refused before the database was opened


def test_state_round_trip_and_bad_folders(tmp_path: Path) -> None:
    est = shipped_table("note10", "ofa_mbv3_w12")
    assert est is not None
    back = predictor_from_state("table", json.loads(json.dumps(est.json_params())),
                                json.loads(json.dumps(est.get_state())))
    probe = get_space("ofa_mbv3_w12").sample_many(20, seed=1)
    probe = [get_space("ofa_mbv3_w12").parse({**a.to_dict(), "r": 192}) for a in probe]
    np.testing.assert_array_equal(back.predict(probe), est.predict(probe))
    with pytest.raises(ConfigError, match="is not a folder"):
        import_lut(tmp_path / "nope", "note10", "ofa_mbv3", out=tmp_path / "t.json")
    with pytest.raises(ConfigError, match="has no"):
        import_lut(tmp_path, "note10", "ofa_mbv3", out=tmp_path / "t.json")
    if NOTE10.is_dir():
        bad = tmp_path / "bad"
        shutil.copytree(NOTE10, bad)
        text = (bad / "224_lookup_table.yaml").read_text()
        (bad / "224_lookup_table.yaml").write_text(text.replace("Conv_1-input", "Conv_9-input"))
        with pytest.raises(ConfigError, match=r"ofa_mbv3_w12's network, it lacks 1 entries, "
                                              r"e\.g\. 'Conv_1-input:7x7x192"):
            import_lut(bad, "note10", "ofa_mbv3", out=tmp_path / "t.json")
        (bad / "224_lookup_table.yaml").write_text(text.replace("mean: 0.9", "mean: -0.9", 1))
        with pytest.raises(ConfigError, match="must be a finite number"):
            import_lut(bad, "note10", "ofa_mbv3", out=tmp_path / "t.json")
        assert not (tmp_path / "t.json").exists()
