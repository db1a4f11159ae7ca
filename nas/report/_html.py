"""The search report: one self-contained HTML page (plotly.js inline; nothing is fetched when
it is viewed).

Sections: the Pareto front (accuracy proxy against predicted latency per device, measured
points where the subnet was verified), hypervolume against trials, the chosen subnets with
their architectures drawn as their space's family has them drawn (the ofa family's as a
per-stage grid of kernel, expand ratio and depth; a family without a drawing of its own as a
table of its architecture's JSON), and each device's latency predictor with its held-out
accuracy.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nas._io import atomic_write, mask_url

if TYPE_CHECKING:
    from nas.search import SearchResult, TrialRecord
    from nas.space import FamilySpace, SearchSpace

__all__ = ["render_report", "write_report"]

_NONE = "&ndash;"  # an HTML entity keeps the source ASCII
_FRONT = "#d62728"
_MEASURED = "#1f77b4"
_OTHERS = "rgba(120,120,120,0.45)"
_INFEASIBLE = "rgba(255,127,14,0.55)"
# kernel size -> hue of the grid cells; expand ratio -> how dark
_KERNEL_HUES = (210, 140, 30, 280, 0)

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto;
       max-width: 1200px; padding: 0 1rem; color: #222; }
h1 { margin-bottom: 0.2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
.meta { color: #666; margin-bottom: 1rem; }
table { border-collapse: collapse; margin: 0.6rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.5rem; text-align: right; }
th { background: #f5f5f5; } td.l, th.l { text-align: left; }
.plots { display: flex; flex-wrap: wrap; gap: 1rem; }
.plot { flex: 1 1 520px; min-width: 420px; }
.subnets { display: flex; flex-wrap: wrap; gap: 1.2rem; }
.subnet { border: 1px solid #ddd; border-radius: 6px; padding: 0.6rem; }
.subnet h3 { margin: 0 0 0.3rem 0; font-size: 1rem; }
.grid td { width: 3.2rem; text-align: center; font-size: 0.8rem; padding: 0.2rem; }
.grid td.off { background: #fafafa; color: #bbb; }
.grid th { font-size: 0.75rem; white-space: nowrap; }
.arch td { text-align: center; font-size: 0.8rem; padding: 0.2rem 0.4rem; }
.arch td.off { background: #fafafa; color: #bbb; }
.arch th { font-size: 0.75rem; white-space: nowrap; }
.legend span { display: inline-block; padding: 0.1rem 0.5rem; margin-right: 0.3rem;
               border-radius: 3px; font-size: 0.8rem; }
.note { color: #666; font-size: 0.85rem; }
"""


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _fmt(v: Any, spec: str = ".4g") -> str:
    if v is None:
        return _NONE
    try:
        return format(float(v), spec)
    except (TypeError, ValueError):
        return _esc(v)


def _count(v: Any) -> str:
    return _NONE if v is None else _esc(v)


def _metric(t: TrialRecord, key: str) -> float | None:
    """A trial's value of ``accuracy``, ``macs``, ``params`` or ``latency:<device>``."""
    if key in t.values:
        return float(t.values[key])
    if key == "accuracy":
        return t.accuracy
    if key == "macs":
        return None if t.macs is None else float(t.macs)
    if key == "params":
        return None if t.params is None else float(t.params)
    if key.startswith("latency:"):
        return t.latency_ms.get(key.split(":", 1)[1])
    return None


def _label(res: SearchResult, key: str) -> str:
    for o in res.objectives:
        if o.name == key:
            return o.label
    if key.startswith("latency:"):
        return f"predicted latency {key.split(':', 1)[1]} (ms)"
    return {"accuracy": "accuracy proxy", "macs": "MACs", "params": "params"}.get(key, key)


def _pairs(res: SearchResult) -> list[tuple[str, str]]:
    """(x, y) metric pairs of the front plots: accuracy against each device's latency when
    accuracy is an objective, else the first two objectives."""
    keys = [o.name for o in res.objectives]
    devices = res.config.devices
    if "accuracy" in keys and devices:
        return [(f"latency:{d}", "accuracy") for d in devices]
    if len(keys) >= 2:
        return [(keys[1], keys[0])]
    return [("trial", keys[0])]


def _plane_front(res: SearchResult, x: str, y: str) -> list[TrialRecord]:
    """The search's front, or, when the search prices several devices and this plot is
    accuracy against one device's latency, the feasible trials not dominated on that plane
    (the front a user of that device alone would see)."""
    if not (len(res.config.devices) > 1 and x.startswith("latency:") and y == "accuracy"):
        return res.front
    from nas.search import pareto_mask

    feas = [t for t in res.trials if t.feasible and _metric(t, x) is not None
            and _metric(t, y) is not None]
    if not feas:
        return res.front
    pts = np.array([[_metric(t, x), -float(_metric(t, y) or 0.0)] for t in feas], float)
    seen: set[str | None] = set()
    out = []
    for t, keep in zip(feas, pareto_mask(pts), strict=True):
        if keep and t.arch_hash not in seen:
            seen.add(t.arch_hash)
            out.append(t)
    return out


def _figure_html(fig: Any, div_id: str) -> str:
    import plotly.io as pio

    return str(pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id,
                           config={"displaylogo": False, "responsive": True}))


def _hover(t: TrialRecord) -> str:
    return f"trial {t.number}<br>{t.arch_hash}"


def _xy(trials: list[TrialRecord], x: str, y: str
        ) -> tuple[list[Any], list[Any], list[str]]:
    """The points of ``trials`` that have both metrics, and their hover texts."""
    xs, ys, text = [], [], []
    for t in trials:
        xv = float(t.number) if x == "trial" else _metric(t, x)
        yv = _metric(t, y)
        if xv is not None and yv is not None:
            xs.append(xv)
            ys.append(yv)
            text.append(_hover(t))
    return xs, ys, text


def _front_figure(res: SearchResult, x: str, y: str) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    done = [t for t in res.trials if t.state == "COMPLETE"]
    front_ids = {t.number for t in res.front}
    feas = [t for t in done if t.feasible and t.number not in front_ids]
    infeas = [t for t in done if not t.feasible]
    for name, trials, style in (
        ("feasible trials", feas, {"color": _OTHERS, "size": 7}),
        ("infeasible trials", infeas, {"color": _INFEASIBLE, "size": 7, "symbol": "x"}),
    ):
        xs, ys, text = _xy(trials, x, y)
        if xs:
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name=name, marker=style,
                                     text=text, hovertemplate="%{text}<br>%{x:.4g}, "
                                     "%{y:.4g}<extra></extra>"))
    _add_front(fig, res, x, y)
    if x.startswith("latency:"):
        _add_measured(fig, res, x.split(":", 1)[1], y)
    fig.update_layout(
        title=f"{_label(res, y)} against {_label(res, x) if x != 'trial' else 'trial'}",
        xaxis_title=_label(res, x) if x != "trial" else "trial",
        yaxis_title=_label(res, y), template="plotly_white", height=460,
        legend={"orientation": "h", "y": -0.2}, margin={"l": 60, "r": 20, "t": 60, "b": 40},
    )
    return fig


def _add_front(fig: Any, res: SearchResult, x: str, y: str) -> None:
    """The plane's front as a step line; with several devices, the search's front too."""
    import plotly.graph_objects as go

    front = sorted(_plane_front(res, x, y), key=lambda t: (_metric(t, x) or 0.0)
                   if x != "trial" else t.number)
    xs, ys, text = _xy(front, x, y)
    name = "Pareto front"
    if front is not res.front and len(res.config.devices) > 1:
        # several devices: each plot's front is that device's (accuracy against its latency)
        name = f"front on {x.split(':', 1)[1]}"
        others = [t for t in res.front if t not in front]
        oxs, oys, otext = _xy(others, x, y)
        if oxs:
            fig.add_trace(go.Scatter(x=oxs, y=oys, mode="markers", name="search front",
                                     marker={"color": _FRONT, "size": 8, "symbol": "circle-open"},
                                     text=otext, hovertemplate="%{text}<br>%{x:.4g}, %{y:.4g}"
                                     "<extra>search front</extra>"))
    if xs:
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=name,
                                 marker={"color": _FRONT, "size": 10},
                                 line={"color": _FRONT, "shape": "hv" if x != "trial"
                                       else "linear"},
                                 text=text, hovertemplate="%{text}<br>%{x:.4g}, %{y:.4g}"
                                 "<extra>front</extra>"))


def _add_measured(fig: Any, res: SearchResult, dev: str, y: str) -> None:
    """The subnets verified on ``dev``: their measured latency, a dotted line from the
    predicted one."""
    import plotly.graph_objects as go

    mx, my, mtext = [], [], []
    for t in res.trials:
        if dev in t.measured_ms and _metric(t, y) is not None:
            mx.append(t.measured_ms[dev])
            my.append(_metric(t, y))
            pred = t.latency_ms.get(dev)
            mtext.append(f"{_hover(t)}<br>predicted {_fmt(pred)} ms")
    if not mx:
        return
    lx: list[float | None] = []
    ly: list[float | None] = []
    for t in res.trials:
        if dev in t.measured_ms and dev in t.latency_ms and _metric(t, y) is not None:
            lx += [t.latency_ms[dev], t.measured_ms[dev], None]
            ly += [_metric(t, y), _metric(t, y), None]
    fig.add_trace(go.Scatter(x=lx, y=ly, mode="lines", showlegend=False,
                             hoverinfo="skip", line={"color": _MEASURED, "width": 1,
                                                     "dash": "dot"}))
    fig.add_trace(go.Scatter(x=mx, y=my, mode="markers", name="measured (verified)",
                             marker={"color": _MEASURED, "size": 11,
                                     "symbol": "diamond-open", "line": {"width": 2}},
                             text=mtext, hovertemplate="%{text}<br>measured %{x:.4g} "
                             "ms<extra></extra>"))


def _hypervolume_figure(res: SearchResult) -> Any:
    import plotly.graph_objects as go

    curve = res.hypervolume_curve()
    fig = go.Figure()
    if curve:
        fig.add_trace(go.Scatter(x=[c[0] for c in curve], y=[c[1] for c in curve],
                                 mode="lines", line={"color": _FRONT, "width": 2},
                                 name="hypervolume", hovertemplate="after %{x} trials: "
                                 "%{y:.4g}<extra></extra>"))
    one = len(res.objectives) == 1
    fig.update_layout(
        title="improvement of the best feasible value" if one else
        "hypervolume of the feasible front",
        xaxis_title="trials", yaxis_title="improvement" if one else "hypervolume",
        template="plotly_white", height=380, margin={"l": 60, "r": 20, "t": 60, "b": 40},
    )
    return fig


def _cell_style(k: int, e: int, kernels: list[int], expands: list[int]) -> str:
    hue = _KERNEL_HUES[kernels.index(k) % len(_KERNEL_HUES)] if k in kernels else 0
    frac = (expands.index(e) + 1) / len(expands) if e in expands else 0.5
    light = 88 - 38 * frac
    color = "#fff" if light < 60 else "#222"
    return f"background:hsl({hue},65%,{light:.0f}%);color:{color}"


def _arch_grid(arch: dict[str, Any], space: SearchSpace | None) -> str:
    """Layers (rows) by stage (columns): kernel and expand ratio of each running layer,
    its colour the kernel's hue, darker for a larger expand ratio; layers beyond the stage's
    depth are greyed."""
    ks, es, ds = arch["ks"], arch["e"], list(arch["d"])
    md = len(ks) // max(1, len(ds))
    fixed = len(ks) - md * len(ds)  # the slots of a fixed-depth last stage (ProxylessNAS)
    if fixed:
        ds.append(fixed)
    n_stages = len(ds)
    kernels = sorted(space.kernel_sizes) if space is not None else sorted(set(ks))
    expands = sorted(space.expand_ratios) if space is not None else sorted(set(es))
    head = "".join(f"<th>stage {s + 1}<br>depth {ds[s]}"
                   f"{' (fixed)' if fixed and s == n_stages - 1 else ''}</th>"
                   for s in range(n_stages))
    rows = []
    for i in range(md):
        cells = []
        for s in range(n_stages):
            j = s * md + i
            if i < ds[s]:
                cells.append(f'<td style="{_cell_style(ks[j], es[j], kernels, expands)}" '
                             f'title="stage {s + 1}, layer {i + 1}: kernel {ks[j]}, expand '
                             f'{es[j]}">k{ks[j]} e{es[j]}</td>')
            else:
                cells.append('<td class="off">&ndash;</td>')
        rows.append(f"<tr><th>layer {i + 1}</th>{''.join(cells)}</tr>")
    return (f'<table class="grid"><tr><th>r={_esc(arch.get("r"))}</th>{head}</tr>'
            f'{"".join(rows)}</table>')


def _legend(space: SearchSpace | None) -> str:
    if space is None:
        return ""
    kernels, expands = sorted(space.kernel_sizes), sorted(space.expand_ratios)
    spans = [f'<span style="{_cell_style(k, expands[-1], kernels, expands)}">kernel {k}</span>'
             for k in kernels]
    spans += [f'<span style="{_cell_style(kernels[0], e, kernels, expands)}">expand {e}</span>'
              for e in expands]
    return f'<p class="legend">{"".join(spans)}</p>'


def _value(v: Any) -> str:
    """One value of an architecture as a table cell's text: a number or text as it is,
    anything else as its JSON."""
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        return _esc(json.dumps(v))
    return _esc(v)


def _arch_table(arch: dict[str, Any], space: FamilySpace | None) -> str:
    """Any family's architecture as a table of its JSON: one row per key, a list's items one
    column each (``n_head`` of each layer of a GPT), greyed past a shorter list's end."""
    width = max((len(v) for v in arch.values() if isinstance(v, list)), default=0)
    head = "".join(f"<th>{i + 1}</th>" for i in range(width))
    rows = []
    for key, v in arch.items():
        if isinstance(v, list):
            cells = "".join(f'<td title="{_esc(key)}[{i}]">{_value(x)}</td>'
                            for i, x in enumerate(v))
            cells += '<td class="off">&ndash;</td>' * (width - len(v))
        else:
            cells = f'<td colspan="{max(1, width)}">{_value(v)}</td>'
        rows.append(f'<tr><th class="l">{_esc(key)}</th>{cells}</tr>')
    top = f"<tr><th></th>{head}</tr>" if width else ""
    return f'<table class="arch">{top}{"".join(rows)}</table>'


@dataclass(frozen=True)
class _ArchView:
    """How the report draws one family's architectures: each one (its dict and its space,
    None when this process does not know the space), the legend above them, and the note
    that says how to read them."""

    draw: Callable[[dict[str, Any], Any], str]
    legend: Callable[[Any], str]
    note: str


_TABLE_VIEW = _ArchView(
    _arch_table, lambda _: "",
    "each architecture as a table of its choices: a row per key, a list's items (one per "
    "layer) in columns.")
#: the families drawn their own way (any other family: :data:`_TABLE_VIEW`)
_VIEWS: dict[str, _ArchView] = {"ofa": _ArchView(
    _arch_grid, _legend,
    "each architecture as a grid of its layers by stage: kernel size (colour) and expand "
    "ratio (darker is larger), greyed where a layer is beyond its stage's depth.")}


def _view(res: SearchResult, space: FamilySpace | None) -> _ArchView:
    """The view of the search's space's family; for a space this process does not know, the
    ofa family's grid when every architecture has its keys (as before families), else the
    table."""
    if space is not None:
        return _VIEWS.get(space.family, _TABLE_VIEW)
    archs = [t.arch for t in res.front if t.arch]
    if archs and all({"ks", "e", "d"} <= set(a) for a in archs):
        return _VIEWS["ofa"]
    return _TABLE_VIEW


def _subnets(res: SearchResult, space: FamilySpace | None, view: _ArchView) -> str:
    devices = res.config.devices
    head = ["trial", "arch hash", "accuracy"]
    for d in devices:
        head += [f"{d} predicted (ms)", f"{d} measured (ms)"]
    head += ["MACs (M)", "params (M)"]
    rows = []
    for t in res.front:
        cells = [str(t.number), f'<code>{_esc(t.arch_hash)}</code>', _fmt(t.accuracy)]
        for d in devices:
            cells += [_fmt(t.latency_ms.get(d)), _fmt(t.measured_ms.get(d))]
        cells += [_fmt((t.macs or 0) / 1e6, ".2f"), _fmt((t.params or 0) / 1e6, ".3f")]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    table = ("<table><tr>" + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr>"
             + "".join(rows) + "</table>")
    cards = []
    for t in res.front:
        if not t.arch:
            continue
        lat = ", ".join(f"{_esc(d)} {_fmt(t.latency_ms.get(d))} ms" for d in devices)
        cards.append(f'<div class="subnet"><h3>trial {t.number} · <code>{_esc(t.arch_hash)}'
                     f'</code></h3><div class="note">accuracy {_fmt(t.accuracy)}'
                     f'{"; " + lat if lat else ""}</div>{view.draw(t.arch, space)}</div>')
    return table + view.legend(space) + f'<div class="subnets">{"".join(cards)}</div>'


def _predictors(res: SearchResult) -> str:
    if not res.predictors:
        return '<p class="note">The search priced no device.</p>'
    head = ["device", "kind", "split", "n train", "n test", "MAPE", "within ±5%",
            "within ±10%", "Kendall τ", "RMSE (ms)", "flops baseline MAPE"]
    rows = []
    for dev, info in res.predictors.items():
        m = info.get("metrics") or {}
        split = "test" if m.get("test") else "train"
        s = m.get(split) or {}
        base = (m.get("flops") or {}).get("mape")
        cells = [f'<td class="l">{_esc(dev)}</td>', f'<td class="l">{_esc(info.get("kind"))}'
                 "</td>", f'<td class="l">{"held out" if split == "test" else "in-sample"}</td>',
                 f"<td>{_count(m.get('n_train', info.get('n_train')))}</td>",
                 f"<td>{_count(m.get('n_test'))}</td>",
                 f"<td>{_fmt(s.get('mape'), '.2%')}</td>",
                 f"<td>{_fmt(s.get('within_5'), '.1%')}</td>",
                 f"<td>{_fmt(s.get('within_10'), '.1%')}</td>",
                 f"<td>{_fmt(s.get('kendall_tau'), '.3f')}</td>",
                 f"<td>{_fmt(s.get('rmse_ms'), '.4g')}</td>",
                 f"<td>{_fmt(base, '.2%')}</td>"]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return ("<table><tr>" + "".join(f'<th class="l">{_esc(h)}</th>' for h in head) + "</tr>"
            + "".join(rows) + "</table>")


def render_report(res: SearchResult, *, title: str | None = None) -> str:
    """The report of a search as one HTML document (about 5 MB: plotly.js is inline)."""
    from plotly.offline import get_plotlyjs

    try:
        from nas.space import get_family_space

        space: FamilySpace | None = get_family_space(res.config.space)
    except Exception:  # a space registered in another process: draw from the archs alone
        space = None
    view = _view(res, space)
    cfg = res.config
    plots = [_figure_html(_front_figure(res, x, y), f"front-{i}")
             for i, (x, y) in enumerate(_pairs(res))]
    hv = _figure_html(_hypervolume_figure(res), "hypervolume")
    cons = ", ".join(f"{_esc(k)} ≤ {_fmt(v)}" for k, v in cfg.constraints.items()) or "none"
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    name = title or f"Search {res.study_name}"
    verified = sum(bool(t.measured_ms) for t in res.trials)
    what = "Pareto front" if len(res.objectives) > 1 else "best feasible subnet"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_esc(name)}</title>
<style>{_CSS}</style>
<script>{get_plotlyjs()}</script>
</head>
<body>
<h1>{_esc(name)}</h1>
<div class="meta">space <b>{_esc(cfg.space)}</b> · {_esc(cfg.strategy)} · objectives
{", ".join(_esc(o.label) for o in res.objectives)} · constraints {cons} ·
{res.n_complete} trials completed, {res.n_failed} failed, {res.n_feasible} feasible
(budget {cfg.n_trials}) · storage <code>{_esc(mask_url(res.storage))}</code> ·
generated {now}</div>

<h2>Pareto front</h2>
<p class="note">Accuracy proxy ({_esc(cfg.proxy)}) against predicted latency per device; the
{what} in red; {verified} verified subnet(s) measured in ONNX Runtime as open diamonds.</p>
<div class="plots">{"".join(f'<div class="plot">{p}</div>' for p in plots)}</div>

<h2>Hypervolume</h2>
<div class="plot">{hv}</div>

<h2>Chosen subnets</h2>
<p class="note">The {what}, {len(res.front)} subnet(s); {view.note}</p>
{_subnets(res, space, view)}

<h2>Latency predictors</h2>
<p class="note">Held-out accuracy of the predictor each device's latencies came from.</p>
{_predictors(res)}
</body>
</html>
"""


def write_report(study: str, storage: str | None, out: Path | str) -> Path:
    """Render the report of a stored search to ``out`` (written atomically)."""
    from nas.search import load_results

    res = load_results(study, storage)
    return atomic_write(out, render_report(res))
