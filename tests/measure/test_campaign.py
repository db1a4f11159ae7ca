"""``run_campaign``: ``nas latency measure`` as one library call, and its report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from nas.db import LatencyDB
from nas.errors import ConfigError
from nas.latency import _cli
from nas.measure import CampaignReport, TimingConfig, run_campaign
from nas.space import get_space

QUICK = TimingConfig.quick()


def test_a_campaign_times_new_subnets_and_reports_them(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'latency.sqlite'}"
    first = run_campaign("cpu-1t", "tiny", url, n=4, noise=2, config=QUICK, progress=False)
    assert isinstance(first, CampaignReport)
    assert (first.device, first.space) == ("cpu-1t", "tiny")
    assert first.measured + first.failed == 4 == len(first.ids)
    assert first.skipped_already_measured == 0
    assert first.selection["requested"] == "auto"
    assert first.selection["method"] == "mixed"
    assert first.noise is not None
    assert first.noise.n == 2
    assert first.scale is None  # quick timing is absolute: no reference, no scale
    if first.measured:
        lat = first.latency_ms
        assert lat is not None
        assert 0 < lat["min"] <= lat["median"] <= lat["max"]
    # a second campaign on the same database (opened by the caller, left open) never picks
    # a subnet timed before
    with LatencyDB(url) as db:
        second = run_campaign("cpu-1t", get_space("tiny"), db, n=3, config=QUICK,
                              progress=False)
        assert second.skipped_already_measured == 4
        assert second.noise is None
        recs = {r.id: r for r in db.measurements("cpu-1t", "tiny", status=None)}
        assert not {recs[i].arch for i in first.ids} & {recs[i].arch for i in second.ids}
        assert {recs[i].source for i in (*first.ids, *second.ids)} == {"measured"}
        assert db.display_url == first.db


def test_the_report_is_what_measure_json_prints(tmp_path: Path) -> None:
    """The CLI prints the library's report; only the keys that apply are there."""
    url = f"sqlite:///{tmp_path / 'latency.sqlite'}"
    root = typer.Typer(no_args_is_help=True)
    _cli.register(root)
    res = CliRunner().invoke(root, ["latency", "measure", "-d", "cpu-1t", "-s", "tiny",
                                    "--n", "2", "--quick", "--no-progress", "--db", url,
                                    "--json"])
    assert res.exit_code == 0, res.output
    printed = json.loads(res.stdout)
    report = run_campaign("cpu-1t", "tiny", url, n=2, seed=1, config=QUICK, progress=False)
    assert set(report.to_dict()) == set(printed)
    assert set(printed) >= {"device", "space", "measured", "failed",
                            "skipped_already_measured", "selection", "db", "scale"}
    assert "noise" not in printed
    assert ("first_error" in printed) == (printed["failed"] > 0)
    assert json.loads(json.dumps(report.to_dict())) == report.to_dict()


@pytest.mark.parametrize(("device", "space", "select", "words"), [
    ("note10", "ofa_mbv3", "auto", "external"),
    ("cpu-1t", "tiny", "best", "select must be one of"),
])
def test_refused_before_the_database_is_opened(tmp_path: Path, device: str, space: str,
                                               select: str, words: str) -> None:
    path = tmp_path / "latency.sqlite"
    with pytest.raises(ConfigError, match=words) as err:
        run_campaign(device, space, f"sqlite:///{path}", n=2, select=select, progress=False)
    assert "\n" not in str(err.value)
    assert not path.exists()
