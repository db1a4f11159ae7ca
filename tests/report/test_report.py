"""The search report: what the page shows, that it is self-contained, and that it renders in
headless Chromium with no network."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from nas.report import render_report
from nas.search import SearchResult

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium)")


class _Cells(HTMLParser):
    """The text of every <td> inside each <table class="grid">, per table."""

    def __init__(self) -> None:
        super().__init__()
        self.grids: list[list[str]] = []
        self._in_grid = False
        self._td: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table" and ("class", "grid") in attrs:
            self._in_grid = True
            self.grids.append([])
        elif tag == "td" and self._in_grid:
            self._td = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._td is not None:
            self.grids[-1].append("".join(self._td).strip())
            self._td = None
        elif tag == "table":
            self._in_grid = False

    def handle_data(self, data: str) -> None:
        if self._td is not None:
            self._td.append(data)


def _chromium(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Headless Chromium with every network request sent to a closed port: a page that needs
    anything from the network cannot render."""
    assert CHROMIUM is not None
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--proxy-server=http://127.0.0.1:9",
         "--proxy-bypass-list=<-loopback>", "--virtual-time-budget=15000", *args],
        capture_output=True, text=True, timeout=timeout, check=False)


def test_page_shows_front_subnets_and_predictors(result: SearchResult) -> None:
    page = render_report(result)
    assert "<title>Search built</title>" in page
    assert "30 trials completed, 2 failed, 22 feasible" in page
    # no resource from anywhere else: plotly.js is inline
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=\"?https?:", page)
    assert len(page) > 3_000_000
    assert "Plotly.newPlot" in page
    # one row and one architecture grid per subnet of the front, the grid's running layers
    # being the architecture's (kernel, expand) in stage order, the others greyed
    rows = re.findall(r"<tr><td>(\d+)</td><td><code>([0-9a-f]{16})</code>", page)
    assert [(int(n), h) for n, h in rows] == [(t.number, t.arch_hash) for t in result.front]
    parser = _Cells()
    parser.feed(page)
    assert len(parser.grids) == len(result.front)
    for grid, t in zip(parser.grids, result.front, strict=True):
        arch = t.arch
        md = len(arch["ks"]) // len(arch["d"])
        expected = [f"k{arch['ks'][s * md + i]} e{arch['e'][s * md + i]}"
                    if i < arch["d"][s] else "\u2013"
                    for i in range(md) for s in range(len(arch["d"]))]
        assert grid == expected
    # the verified subnets' measured latency next to the predicted one
    verified = [t for t in result.front if t.measured_ms]
    assert len(verified) == 2
    for t in verified:
        assert f"{t.measured_ms['cpu-1t']:.4g}" in page
    # the predictor's held-out accuracy next to the flops baseline
    assert re.search(r"cpu-1t</td><td class=\"l\">additive</td><td class=\"l\">held out</td>"
                     r"<td>45</td><td>15</td><td>3.10%</td><td>80.0%</td><td>95.0%</td>"
                     r"<td>0.900</td><td>0.012</td><td>12.40%</td>", page)


def test_one_objective_shows_the_best_feasible_subnet(make_result: Any) -> None:
    res = make_result(["accuracy"], verified=1)
    assert len(res.front) == 1
    page = render_report(res)
    assert "best feasible subnet" in page
    assert "improvement of the best feasible value" in page
    assert page.count('class="grid"') == 1


def test_a_search_without_trials_still_renders(make_result: Any) -> None:
    res = make_result(["accuracy", "latency:cpu-1t"], n=0, verified=0)
    page = render_report(res)
    assert "0 trials completed" in page
    assert 'class="grid"' not in page


class _ArchTables(HTMLParser):
    """Per <table class="arch">: each row's header and cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict[str, list[str]]] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table" and ("class", "arch") in attrs:
            self.tables.append({})
        elif tag == "tr" and self.tables:
            self._row = []
        elif tag in ("th", "td") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("th", "td") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row:
            self.tables[-1][self._row[0]] = self._row[1:]
            self._row = None
        elif tag == "table":
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def test_a_gpt_study_draws_each_architecture_as_a_table_of_its_choices(
        gpt_result: SearchResult, make_result: Any) -> None:
    res = gpt_result
    page = render_report(res)
    assert "<title>Search gpt</title>" in page
    assert 'class="grid"' not in page
    assert "kernel size (colour)" not in page
    parser = _ArchTables()
    parser.feed(page)
    assert 1 < len(parser.tables) == len(res.front) < len(res.trials)
    for table, t in zip(parser.tables, res.front, strict=True):
        arch = t.arch
        assert arch is not None
        n = arch["n_layer"]
        assert table[""] == [str(i + 1) for i in range(n)]  # a column per layer
        assert table["n_layer"] == [str(n)]
        assert table["n_embd"] == [str(arch["n_embd"])]
        assert table["n_head"] == [str(h) for h in arch["n_head"]]
        assert table["mlp"] == [str(m) for m in arch["mlp"]]
    # a space this process does not know: drawn from the architectures alone, the ofa
    # family's grid for archs in its format (as before families), a table otherwise
    elsewhere = res.config.model_copy(update={"space": "elsewhere"})
    res.config = elsewhere
    assert render_report(res).count('class="arch"') == len(res.front)
    ofa = make_result(["accuracy", "latency:cpu-1t"])
    ofa.config = ofa.config.model_copy(update={"space": "elsewhere"})
    page = render_report(ofa)
    assert page.count('class="grid"') == len(ofa.front)
    assert 'class="arch"' not in page


def test_report_of_an_unknown_study_is_one_line(run_nas: Any, tmp_path: Path) -> None:
    code, _, err = run_nas(["report", "--study", "nope", "--storage",
                            str(tmp_path / "none.journal"), "--out", str(tmp_path / "r.html")])
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("error: ")
    assert not (tmp_path / "r.html").exists()


@needs_chromium
def test_report_renders_in_headless_chromium_offline(result: SearchResult,
                                                     tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(render_report(result), encoding="utf-8")
    dom = _chromium("--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    # plotly drew both figures (its SVG roots exist only after plotly.js ran)
    for div in ("front-0", "hypervolume"):
        block = html[html.index(f'id="{div}"'):]
        assert 'class="main-svg"' in block[:200_000], div
    assert html.count('class="main-svg"') >= 4
    # one marker per completed trial plus the measured ones, and the legend's entries
    done = sum(t.state == "COMPLETE" for t in result.trials)
    measured = sum(bool(t.measured_ms) for t in result.trials)
    assert html.count('class="point"') == done + measured
    for name in ("Pareto front", "feasible trials", "infeasible trials",
                 "measured (verified)"):
        assert f">{name}<" in html, name

    shot = tmp_path / "report.png"
    run = _chromium("--hide-scrollbars", "--window-size=1280,2200", f"--screenshot={shot}",
                    page.as_uri())
    assert run.returncode == 0, run.stderr[-2000:]
    assert shot.is_file(), run.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("RGB"), dtype=float)
    assert img.shape == (2200, 1280, 3)
    # the front plot's area holds the red front and the grey trials, not a blank page
    plot = img[250:700, 100:1200]
    red = (plot[..., 0] > 180) & (plot[..., 1] < 90) & (plot[..., 2] < 90)
    assert red.sum() > 200
    assert img.std() > 20
