"""``nas search`` and ``nas results`` (``nas export --study`` lives with ``nas export``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from nas._cli_utils import (
    MAX_ARCHS,
    JsonOpt,
    StorageOpt,
    console,
    err_console,
    print_json,
    seed_option,
    study_option,
)
from nas._outputs import check_apart, storage_file
from nas.errors import ConfigError
from nas.search._engines import ENGINES
from nas.search._samplers import SAMPLERS

if TYPE_CHECKING:
    from nas.search import SearchConfig

__all__ = ["print_front", "register"]

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


def print_front(res: Any, *, title: str | None = None, all_trials: bool = False) -> None:
    """The front (or best) as a table: arch hash, accuracy, latency per device, MACs, params;
    then one summary line."""
    from nas.search import front_summary, front_table

    console.print(front_table(res, title=title, all_trials=all_trials))
    console.print(front_summary(res))


ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", "-c", help="Search config YAML (experiments/*.yaml); flags override it.")]
OptSpace = Annotated[str | None, typer.Option("--space", "-s", help="Search space.")]
ProxyOpt = Annotated[str | None, typer.Option(
    help="Accuracy proxy, e.g. inherited, macs, predictor:kind=mlp (`nas proxies list`).")]
ObjectiveOpt = Annotated[list[str] | None, typer.Option(
    "--objective", "-O", help="Objective (repeat): accuracy, latency:<device>, macs, params, "
    "memory (gpt spaces: weights + KV cache in MiB, exact, one sequence in float32, the cache "
    "at the space's context; memory:<C> at C positions, e.g. memory:128).")]
ConstraintOpt = Annotated[list[str] | None, typer.Option(
    "--constraint", "-C", help="Upper bound (repeat): latency:<device>=MS, params=N, macs=N, "
    "memory=MIB or memory:<C>=MIB (in MiB; below the smallest subnet's is refused).")]
SamplerOpt = Annotated[str | None, typer.Option(
    help=f"Ray engine: search strategy: {SAMPLERS.help(lambda c: c.description)}.")]
NTrialsOpt = Annotated[int | None, typer.Option("--n-trials", "-n", help=(
    "Trial budget (Ray engine); with the predictor engine, the trials stored: the front and "
    "a sample of what was scored."))]
EngineOpt = Annotated[str | None, typer.Option(
    "--engine", help="auto (default): a setting of one engine (--workers, --sampler...; "
    "--generations) chooses it, else the search chooses: the predictor engine when every "
    "objective and constraint is a predictor, Ray otherwise. Engines: "
    f"{ENGINES.help(lambda e: e.description)}.")]
GenerationsOpt = Annotated[int | None, typer.Option(
    "--generations", help="Predictor engine: generations of its NSGA-II (default 300).")]
PopulationOpt = Annotated[int | None, typer.Option(
    "--population", help="Population of the predictor engine (default 100) or of the nsga2 "
                         "and evolution samplers (default 20).")]
InterpolateOpt = Annotated[bool | None, typer.Option(
    "--interpolate/--no-interpolate", help="On devices priced at a few resolutions only (a "
    "lookup table, e.g. note10), also search the resolutions in between, priced by "
    "interpolation (default: keep to the table's).")]
AddressOpt = Annotated[str | None, typer.Option(
    help="Ray engine: cluster address (default RAY_ADDRESS, else a local Ray).")]
WorkersOpt = Annotated[int | None, typer.Option(
    help="Ray engine: actors evaluating subnets (default 1).")]
BatchSizeOpt = Annotated[int | None, typer.Option(
    help="Ray engine: subnets per actor call (default 4).")]
LatencyKindOpt = Annotated[str | None, typer.Option(
    help="Latency predictor kind (default: the best stored one per device).")]
ResumeOpt = Annotated[bool, typer.Option(
    help="Continue the stored study: nothing completed is lost or run again.")]
VerifyOpt = Annotated[int, typer.Option(
    min=0, max=MAX_ARCHS, help="Then measure the first N subnets of the front for real.")]


def _search_config(config: Path | None, resume: bool, overrides: dict[str, Any]
                   ) -> SearchConfig:
    """The configuration to run: the file and flags, or (``--resume`` with neither file nor
    space) the stored one with the flags that say how to run it (a flag of another engine
    than the stored search's is refused)."""
    from nas.search import SearchConfig, load_results

    study, space = overrides.get("study"), overrides.get("space")
    if resume and config is None and space is None:
        if study is None:
            raise ConfigError("--resume needs --study (and --storage if not the default)")
        stored = load_results(study, overrides.get("storage")).config
        run = {k for _, engine in ENGINES.items() for k in engine.config.run_fields}
        given = {k: v for k, v in overrides.items() if k in run and v is not None}
        return SearchConfig.from_dict({**stored.model_dump(), **given},
                                      where=f"stored config of study {study!r}")
    if config is None and space is None:
        raise ConfigError("give a search config (--config FILE) or at least --space")
    return SearchConfig.load(config, **overrides)


def search_cmd(
    config: ConfigOpt = None,
    space: OptSpace = None,
    checkpoint: Annotated[str | None, typer.Option(help="Trained supernet checkpoint.")] = None,
    data: Annotated[str | None, typer.Option(help="Data for the accuracy proxy.")] = None,
    proxy: ProxyOpt = None,
    objective: ObjectiveOpt = None,
    constraint: ConstraintOpt = None,
    sampler: SamplerOpt = None,
    n_trials: NTrialsOpt = None,
    workers: WorkersOpt = None,
    batch_size: BatchSizeOpt = None,
    seed: Annotated[int | None, seed_option("Sampler seed")] = None,
    study: Annotated[str | None, study_option("(default: the config's, else made of the "
                                              "space, objectives, strategy and seed)")] = None,
    storage: StorageOpt = None,
    address: AddressOpt = None,
    db: Annotated[str | None, typer.Option(help="Latency database URL or file.")] = None,
    latency_kind: LatencyKindOpt = None,
    engine: EngineOpt = None,
    generations: GenerationsOpt = None,
    population: PopulationOpt = None,
    interpolate: InterpolateOpt = None,
    resume: ResumeOpt = False,
    verify: VerifyOpt = 0,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    json_out: JsonOpt = False,
) -> None:
    """Search the space for the accuracy/latency Pareto front (or the best subnet under a
    budget), stored as an Optuna study.

    Two engines (said on stderr): when every objective and constraint is a predictor (e.g.
    --proxy ofa-imagenet with latency on note10), whole generations are scored in this
    process by a vectorised NSGA-II, in about a second; when the accuracy proxy needs the
    supernet (inherited, zero-cost), subnets are scored by Ray actors (in-process Ray unless
    --address or RAY_ADDRESS names a cluster). Without --engine, a setting of one engine
    chooses it (--sampler, --workers, --batch-size, --address: Ray; --generations: the
    predictor engine), else the search does; a setting of the other engine than the one
    that runs is refused, not ignored.

    The study is stored (journal file under runs/studies/ by default) and opens in
    optuna-dashboard; `nas results --study NAME` prints the front again, `nas report` draws
    it, `nas export --study NAME --pareto` exports it.
    """
    from nas.search import load_results, run_search, verify_trials

    cfg = _search_config(config, resume, dict(
        space=space, checkpoint=checkpoint, data=data, proxy=proxy, objectives=objective,
        constraints=_parse_constraints(constraint), sampler=sampler, n_trials=n_trials,
        workers=workers, batch_size=batch_size, seed=seed, study=study, storage=storage,
        address=address, db=db, latency_kind=latency_kind, engine=engine,
        generations=generations, population=population, interpolate=interpolate,
    ))
    _check_storage_apart(cfg, config)

    def announce(engine: str, why: str) -> None:  # once the config passed its checks
        if not json_out:
            err_console.print(f"engine: {engine} ({why}): scoring {ENGINES.get(engine).where}")

    res = run_search(cfg, resume=resume, progress=progress and not json_out,
                     on_start=announce)
    if verify:
        verify_trials(res.study_name, res.storage, verify, progress=progress and not json_out)
        res = load_results(res.study_name, res.storage)
    if json_out:
        print_json(res.to_json())
        return
    print_front(res)
    err_console.print(f"dashboard: optuna-dashboard {res.storage}")


def _check_storage_apart(cfg: SearchConfig, config: Path | None) -> None:
    """The study's storage is written: it is never a file the search reads."""
    written = storage_file(cfg.storage_url)
    if written is None:
        return
    data = getattr(cfg, "data", None)
    check_apart(written, "--storage", [
        ("--config", config), ("--checkpoint", getattr(cfg, "checkpoint", None)),
        ("--db", storage_file(getattr(cfg, "db", None))),
        ("--data", data if data and Path(data).exists() else None)])


def _list_studies(storage: str | None, json_out: bool) -> None:
    """The studies in ``storage``, or in every journal under runs/studies/."""
    import optuna
    from rich.table import Table

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
    study: Annotated[str | None, study_option("(without it: list the studies)")] = None,
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


def samplers_list_cmd(json_out: JsonOpt = False) -> None:
    """List the registered samplers (`nas search --sampler`, the Ray engine's strategies):
    what each is, whether it handles several objectives, and which one a search uses by
    default."""
    from rich.table import Table

    from nas.search._config import RaySearchConfig

    default = RaySearchConfig.model_fields["sampler"].default
    rows: list[dict[str, Any]] = [
        {"name": name, "description": cls.description, "tags": sorted(cls.tags),
         "default": name == default, "multi_objective": bool(cls.multi_objective)}
        for name, cls in SAMPLERS.items()]
    if json_out:
        print_json(rows)
        return
    table = Table("sampler", "what it is", "objectives", title="samplers")
    for r in rows:
        table.add_row(str(r["name"]) + (" (default)" if r["default"] else ""),
                      str(r["description"]), "several" if r["multi_objective"] else "one")
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("search")(search_cmd)
    app.command("results")(results_cmd)
    samplers = typer.Typer(help="The search's samplers (Optuna's, and Once-for-All's "
                           "evolution).", no_args_is_help=True)
    samplers.command("list")(samplers_list_cmd)
    app.add_typer(samplers, name="samplers")
