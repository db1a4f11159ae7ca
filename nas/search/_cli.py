"""``nas search`` and ``nas results`` (``nas export --study`` lives with ``nas export``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from nas._cli_utils import console, err_console, print_json
from nas.errors import ConfigError

__all__ = ["print_front", "register"]

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]
StorageOpt = Annotated[str | None, typer.Option(
    "--storage", help="Optuna storage: journal file, sqlite:///FILE or postgresql://... "
    "(default runs/studies/<study>.journal).")]


def _parse_constraints(items: list[str] | None) -> dict[str, float] | None:
    if not items:
        return None
    out: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("<=") if "<=" in item else item.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"--constraint {item!r}: write KEY=BOUND, e.g. latency:cpu-1t=4.0 "
                              "or params=3e6") from None
        if not sep:
            raise ConfigError(f"--constraint {item!r}: write KEY=BOUND")
    return out


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def print_front(res: Any, *, title: str | None = None, all_trials: bool = False) -> None:
    """The front (or best) as a table: arch hash, accuracy, latency per device, MACs, params."""
    devices = res.config.devices
    trials = res.trials if all_trials else res.front
    table = Table(title=title, title_justify="left")
    table.add_column("trial", justify="right")
    table.add_column("arch", no_wrap=True, min_width=16)
    if "accuracy" in res.config.objectives:
        table.add_column(f"accuracy ({res.config.proxy})", justify="right")
    for d in devices:
        table.add_column(f"{d} ms", justify="right")
        if any(d in t.measured_ms for t in trials):
            table.add_column(f"{d} measured", justify="right")
    table.add_column("MACs (M)", justify="right")
    table.add_column("params (M)", justify="right")
    if all_trials:
        table.add_column("state")
    for t in trials:
        row = [str(t.number), t.arch_hash or "-"]
        if "accuracy" in res.config.objectives:
            row.append(_fmt(t.accuracy))
        for d in devices:
            row.append(_fmt(t.latency_ms.get(d)))
            if any(d in x.measured_ms for x in trials):
                row.append(_fmt(t.measured_ms.get(d)))
        row += [_fmt(t.macs / 1e6 if t.macs else None), _fmt(t.params / 1e6 if t.params else None)]
        if all_trials:
            state = t.state.lower() + (" (re-run)" if t.retried else "")
            if t.state == "COMPLETE" and not t.feasible:
                state += " infeasible"
            if t.duplicate_of is not None:
                state += f" = {t.duplicate_of}"
            row.append(state)
        table.add_row(*row)
    console.print(table)
    what = "best feasible subnet" if len(res.objectives) == 1 else "Pareto front"
    cons = ", ".join(f"{k} <= {v:g}" for k, v in res.config.constraints.items())
    console.print(
        f"{what}: {len(res.front)} subnet(s) from {len(res.budget_trials)} trials "
        f"({res.n_complete} completed, {res.n_failed} failed evaluations, {res.n_feasible} "
        f"feasible{'; ' + cons if cons else ''}). Study {res.study_name!r} in {res.storage}."
    )


def search_cmd(
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="Search config YAML (experiments/*.yaml); flags override it.")
    ] = None,
    space: Annotated[str | None, typer.Option("--space", "-s", help="Search space.")] = None,
    checkpoint: Annotated[str | None, typer.Option(help="Trained supernet checkpoint.")] = None,
    data: Annotated[str | None, typer.Option(help="Data for the accuracy proxy.")] = None,
    proxy: Annotated[str | None, typer.Option(
        help="Accuracy proxy, e.g. inherited, macs, predictor:kind=mlp (`nas proxies list`).")
    ] = None,
    objective: Annotated[list[str] | None, typer.Option(
        "--objective", "-O", help="Objective (repeat): accuracy, latency:<device>, macs, "
        "params.")] = None,
    constraint: Annotated[list[str] | None, typer.Option(
        "--constraint", "-C", help="Upper bound (repeat): latency:<device>=MS, params=N, "
        "macs=N.")] = None,
    sampler: Annotated[str | None, typer.Option(
        help="tpe, nsga2, random, gp or evolution (OFA's). gp suits small spaces: it takes "
        "about a minute per trial on cifar_mbv3's 46 parameters here.")] = None,
    n_trials: Annotated[int | None, typer.Option("--n-trials", "-n", help="Trial budget.")
                        ] = None,
    workers: Annotated[int | None, typer.Option(help="Ray actors evaluating subnets.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Subnets per actor call.")] = None,
    seed: Annotated[int | None, typer.Option(help="Sampler seed.")] = None,
    study: Annotated[str | None, typer.Option(help="Study name (default from the config).")
                     ] = None,
    storage: StorageOpt = None,
    address: Annotated[str | None, typer.Option(
        help="Ray cluster address (default RAY_ADDRESS, else a local Ray).")] = None,
    db: Annotated[str | None, typer.Option(help="Latency database URL or file.")] = None,
    latency_kind: Annotated[str | None, typer.Option(
        help="Latency predictor kind (default: the best stored one per device).")] = None,
    resume: Annotated[bool, typer.Option(
        help="Continue the stored study: nothing completed is lost or run again.")] = False,
    verify: Annotated[int, typer.Option(
        min=0, help="Then measure the first N subnets of the front for real.")] = 0,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    json_out: JsonOpt = False,
) -> None:
    """Search the space for the accuracy/latency Pareto front (or the best subnet under a
    budget), with an Optuna study driven here and subnets scored by Ray actors.

    Starts Ray in-process unless --address or RAY_ADDRESS names a cluster. The study is
    stored (journal file under runs/studies/ by default) and opens in optuna-dashboard;
    `nas results --study NAME` prints the front again, `nas export --study NAME --pareto`
    exports it.
    """
    from nas.search import SearchConfig, run_search
    from nas.search._ship import verify_trials

    overrides: dict[str, Any] = dict(
        space=space, checkpoint=checkpoint, data=data, proxy=proxy, objectives=objective,
        constraints=_parse_constraints(constraint), sampler=sampler, n_trials=n_trials,
        workers=workers, batch_size=batch_size, seed=seed, study=study, storage=storage,
        address=address, db=db, latency_kind=latency_kind,
    )
    if resume and config is None and space is None:
        if study is None:
            raise ConfigError("--resume needs --study (and --storage if not the default)")
        from nas.search._driver import RUN_FIELDS
        from nas.search._results import load_results

        stored = load_results(study, storage).config
        cfg = stored.model_copy(update={k: overrides[k] for k in RUN_FIELDS
                                        if overrides.get(k) is not None})
    else:
        if config is None and space is None:
            raise ConfigError("give a search config (--config FILE) or at least --space")
        cfg = SearchConfig.load(config, **overrides)
    res = run_search(cfg, resume=resume, progress=progress and not json_out)
    if verify:
        verify_trials(res.study_name, res.storage, verify, progress=progress and not json_out)
        from nas.search._results import load_results

        res = load_results(res.study_name, res.storage)
    if json_out:
        print_json(res.to_json())
        return
    print_front(res)
    err_console.print(f"dashboard: optuna-dashboard {res.storage}")


def _list_studies(storage: str | None, json_out: bool) -> None:
    """The studies in ``storage``, or in every journal under runs/studies/."""
    import optuna

    from nas.search import open_storage

    urls = [storage] if storage else [str(p) for p in
                                      sorted(Path("runs/studies").glob("*.journal"))]
    rows: list[dict[str, Any]] = []
    for url in urls:
        for s in optuna.get_all_study_summaries(open_storage(url, create=False),
                                                include_best_trial=False):
            rows.append({"study": s.study_name, "storage": url, "trials": s.n_trials,
                         "objectives": s.user_attrs.get("objectives"),
                         "started": str(s.datetime_start or "")[:19]})
    if json_out:
        print_json(rows)
        return
    if not rows:
        console.print(f"no studies in {storage or 'runs/studies/'}; start one with `nas search`")
        return
    table = Table("study", "trials", "objectives", "started", "storage")
    for r in rows:
        table.add_row(r["study"], str(r["trials"]), ", ".join(r["objectives"] or []),
                      r["started"], r["storage"])
    console.print(table)


def results_cmd(
    study: Annotated[str | None, typer.Option(
        "--study", help="Study name (without it: list the studies).")] = None,
    storage: StorageOpt = None,
    all_trials: Annotated[bool, typer.Option("--all", help="Every trial, not only the front.")
                          ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Print a search's Pareto front (or constrained best) again, from its storage; without
    --study, list the studies (those under runs/studies/, or in --storage)."""
    from nas.search import load_results

    if study is None:
        _list_studies(storage, json_out)
        return

    res = load_results(study, storage)
    if json_out:
        out = res.to_json()
        if all_trials:
            out["trials"] = [t.to_json() for t in res.trials]
        out["hypervolume"] = res.hypervolume_curve()[-1][1] if res.front else 0.0
        print_json(out)
        return
    print_front(res, all_trials=all_trials)


def register(app: typer.Typer) -> None:
    app.command("search")(search_cmd)
    app.command("results")(results_cmd)
