"""A search's front (or all its trials) as a terminal table, for the CLI and the demo."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from nas.search._results import SearchResult

__all__ = ["front_summary", "front_table"]


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _state(t: Any) -> str:
    state = t.state.lower() + (" (re-run)" if t.retried else "")
    if t.state == "COMPLETE" and not t.feasible:
        state += " infeasible"
    if t.duplicate_of is not None:
        state += f" = {t.duplicate_of}"
    return state


def front_table(res: SearchResult, *, title: str | None = None,
                all_trials: bool = False) -> Table:
    """The front (or best; every trial with ``all_trials``) as a table: arch hash, accuracy,
    latency per device (and measured, where verified), memory in MiB (a search with memory),
    MACs, params."""
    devices = res.config.devices
    trials = res.trials if all_trials else res.front
    accuracy = "accuracy" in res.config.objectives
    measured = {d: any(d in t.measured_ms for t in trials) for d in devices}
    table = Table(title=title, title_justify="left")
    table.add_column("trial", justify="right")
    table.add_column("arch", no_wrap=True, min_width=16)
    if accuracy:
        table.add_column(f"accuracy ({res.config.proxy})", justify="right")
    for d in devices:
        table.add_column(f"{d} ms", justify="right")
        if measured[d]:
            table.add_column(f"{d} measured", justify="right")
    for key in res.memory_keys:
        table.add_column("memory (MiB)" if key == "memory"
                         else f"memory at {key.split(':', 1)[1]} (MiB)", justify="right")
    table.add_column("MACs (M)", justify="right")
    table.add_column("params (M)", justify="right")
    if all_trials:
        table.add_column("state")
    for t in trials:
        row = [str(t.number), t.arch_hash or "-"]
        if accuracy:
            row.append(_fmt(t.accuracy))
        for d in devices:
            row.append(_fmt(t.latency_ms.get(d)))
            if measured[d]:
                row.append(_fmt(t.measured_ms.get(d)))
        row += [_fmt(t.memory_mib.get(k)) for k in res.memory_keys]
        row += [_fmt(t.macs / 1e6 if t.macs else None), _fmt(t.params / 1e6 if t.params else None)]
        if all_trials:
            row.append(_state(t))
        table.add_row(*row)
    return table


def front_summary(res: SearchResult) -> str:
    """One line under the table: what the front is, the trial counts, the constraints and
    where the study is stored."""
    what = "best feasible subnet" if len(res.objectives) == 1 else "Pareto front"
    cons = ", ".join(f"{k} <= {v:g}{' MiB' if k in res.memory_keys else ''}"
                     for k, v in res.config.constraints.items())
    return (f"{what}: {len(res.front)} subnet(s) from {len(res.budget_trials)} trials "
            f"({res.n_complete} completed, {res.n_failed} failed evaluations, {res.n_feasible} "
            f"feasible{'; ' + cons if cons else ''}). Study {res.study_name!r} in {res.storage}.")
