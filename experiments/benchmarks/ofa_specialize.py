"""Specialization for a Note10 latency budget: OFA's own evolutionary search against ours.

Side by side in one run, on OFA's ImageNet accuracy predictor and OFA's Note10 latency table:

- **OFA**: the ``ofa`` package's ``EvolutionFinder`` with its defaults (population 100, 500
  generations, parents 25%, mutation 50%, mutation probability 0.1), its tutorial
  ``AccuracyPredictor`` loaded from ``acc_predictor.pth`` and its ``LatencyTable`` over the
  ``note10`` folder (see ``_ofa_ref.py``: OFA's code untouched, thin adapters only, resolutions
  sampled from the table's five, 160..224 in steps of 16). ``--ofa-finder library`` (default)
  is ``ofa.nas.search_algorithm.EvolutionFinder``; ``tutorial`` the one of OFA's tutorial
  notebook (``ofa.tutorial.evolution_finder``).
- **ours**: ``nas.search.specialize(space="ofa_mbv3", proxy="ofa-imagenet", ...)``, with one
  budget a run (``objectives=["accuracy"]``), and once for the whole front
  (``objectives=["accuracy", "latency:note10"]`` under the largest budget), per seed.

Every subnet either side returns is re-scored with OFA's own predictor and table (not the
searcher's claim): accuracy, latency, within budget. Runs are interleaved (OFA budget b seed
s, then ours b s, ...) so that the machine's drifts hit both alike; medians over seeds are
quoted. Both sides run in this process with one torch thread (and one BLAS thread).

Second table: the 8 Note10 subnets OFA published (``ofa_specialized/note10_*``): the latency
in their name, their price by the converted table (``nas.latency.load_predictor("note10",
space)``), their accuracy by ``ofa-imagenet`` where it applies (the w1.0 space), and the best
our search finds under each of those latencies (from one whole-front run, ``--wide-budget``).

Every finished run is appended to a state file (``--state``); a run that is stopped and
started again with the same options skips what is there (``--fresh`` starts over).

    python experiments/benchmarks/ofa_specialize.py                 # full: about 5 minutes
    python experiments/benchmarks/ofa_specialize.py --quick         # smoke: under a minute
    python experiments/benchmarks/ofa_specialize.py --parts published
"""

from __future__ import annotations

import os

# one thread for both sides (fair, and the machine is shared); before numpy and torch load
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _ofa_ref as ref  # noqa: E402
from _common import header, median, table  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_STATE = ROOT / "runs" / "bench_ofa_specialize" / "state.jsonl"
DEVICE = "note10"
METRIC = f"latency:{DEVICE}"
ACC_TOL = 0.0005  # the tolerance on the median accuracy


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budgets", default="15,20,25,30,40,50",
                    help="Note10 latency budgets in ms, comma-separated (default %(default)s)")
    ap.add_argument("--seeds", default="0,1,2", help="seeds, comma-separated (default "
                    "%(default)s); each side gets the same seed")
    ap.add_argument("--parts", default="budgets,front,published",
                    help="what to run: budgets (OFA and ours per budget and seed), front (ours, "
                    "the whole front once per seed), published (OFA's Note10 subnets); "
                    "default %(default)s")
    ap.add_argument("--ofa-finder", choices=("library", "tutorial"), default="library",
                    help="OFA's EvolutionFinder: ofa.nas.search_algorithm (library) or "
                    "ofa.tutorial.evolution_finder (tutorial); default %(default)s")
    ap.add_argument("--ofa-population", type=int, default=100, help="OFA's default: 100")
    ap.add_argument("--ofa-generations", type=int, default=500,
                    help="OFA's max_time_budget; OFA's default: 500")
    ap.add_argument("--population", type=int, default=None,
                    help="population of our search (default: specialize's own)")
    ap.add_argument("--generations", type=int, default=None,
                    help="generations of our search (default: specialize's own)")
    ap.add_argument("--front-budget", type=float, default=None,
                    help="budget of the whole-front run (default: the largest of --budgets)")
    ap.add_argument("--wide-budget", type=float, default=65.0,
                    help="budget of the whole-front run the published subnets are compared "
                    "with (default %(default)s ms: above the 64 ms of OFA's largest)")
    ap.add_argument("--ofa-files", type=Path, default=ROOT.parent / "shared" / "ofa",
                    help="OFA's published files: acc_predictor.pth, note10/, ofa_specialized/ "
                    "(default %(default)s)")
    ap.add_argument("--state", type=Path, default=None,
                    help=f"state file of finished runs (default {DEFAULT_STATE.relative_to(ROOT)}"
                    "; with --quick a _quick one, emptied first)")
    ap.add_argument("--fresh", action="store_true", help="empty the state file first")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: budget 20, seed 0, OFA with 50 generations")
    ap.add_argument("--json", type=Path, default=None, metavar="FILE",
                    help="also write every run and the summary as JSON to FILE ('-': stdout, "
                    "and the tables go to stderr)")
    args = ap.parse_args(argv)
    try:
        args.budgets = [float(v) for v in args.budgets.split(",") if v.strip()]
        args.seeds = [int(v) for v in args.seeds.split(",") if v.strip()]
    except ValueError:
        ap.error("--budgets and --seeds take comma-separated numbers")
    if not args.budgets or min(args.budgets) <= 0:
        ap.error(f"--budgets = {args.budgets}: positive numbers of ms expected")
    if not args.seeds or min(args.seeds) < 0:
        ap.error(f"--seeds = {args.seeds}: non-negative integers expected")
    args.parts = [p for p in args.parts.split(",") if p.strip()]
    bad = set(args.parts) - {"budgets", "front", "published"}
    if bad:
        ap.error(f"--parts = {','.join(sorted(bad))}: must be among budgets, front, published")
    if args.quick:
        args.budgets, args.seeds, args.ofa_generations = [20.0], [0], 50
    if args.front_budget is None:
        args.front_budget = max(args.budgets)
    if args.state is None:
        args.state = DEFAULT_STATE.with_name("state_quick.jsonl") if args.quick \
            else DEFAULT_STATE
    return args


# ---------------------------------------------------------------------- the reference
class Reference:
    """OFA's predictor and table (re-scoring) and its search."""

    def __init__(self, files: Path, finder: str) -> None:
        import torch

        torch.set_num_threads(1)
        mod = ref.reference_module()
        self.acc = mod.ofa_accuracy_predictor(files / "acc_predictor.pth")
        self.table = mod.ofa_latency_table(files / "note10", ref.TABLE_RESOLUTIONS)
        self.finder = finder
        self.encoder = ref.mobilenet_arch_encoder(ref.TABLE_RESOLUTIONS)
        self.Library = ref.library_evolution_finder()
        self.Tutorial = ref.tutorial_evolution_finder()

    def accuracy(self, arch: dict[str, Any]) -> float | None:
        s = ref.spec(arch)
        if not 112 <= s["r"][0] < 112 + 16 * 8:  # outside the encoding's 8 buckets
            return None
        return float(self.acc.predict_accuracy([s])[0])

    def latency(self, arch: dict[str, Any]) -> float | None:
        s = ref.spec(arch)
        if s["r"][0] not in self.table.latency_tables:
            return None
        return float(self.table.predict_efficiency(s))

    def search(self, budget: float, seed: int, population: int, generations: int
               ) -> dict[str, Any]:
        acc = _Counting(ref.LibraryAccuracy(self.acc, self.encoder), "predict_acc",
                        "predict_accuracy", self.acc)
        eff = _Counting(ref.LibraryEfficiency(self.table), "get_efficiency",
                        "predict_efficiency", self.table)
        ref.seed_everything(seed)
        quiet = io.StringIO()
        t = time.perf_counter()
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            if self.finder == "library":
                f = self.Library(eff, acc, population_size=population,
                                 max_time_budget=generations)
                _, best = f.run_evolution_search(budget)
            else:
                f = self.Tutorial(DEVICE, budget, eff, acc, population_size=population,
                                  max_time_budget=generations)
                _, best = f.run_evolution_search()
        seconds = time.perf_counter() - t
        claimed, arch, _ = best
        return {"arch": ref.spec(arch), "claimed_accuracy": float(claimed), "seconds": seconds,
                "n_scored": acc.n, "n_priced": eff.n}


class _Counting:
    """Counts the architectures handed to a predictor (OFA calls one method per finder)."""

    def __init__(self, inner: Any, many: str, many_raw: str, raw: Any) -> None:
        self.inner, self.raw, self.n = inner, raw, 0
        self._many, self._raw = many, many_raw

    @property
    def arch_encoder(self) -> Any:
        return self.inner.arch_encoder

    def _call(self, archs: Any, raw: bool) -> Any:
        batch = isinstance(archs, list)
        self.n += len(archs) if batch else 1
        if raw:
            return getattr(self.raw, self._raw)(archs)
        return getattr(self.inner, self._many)(archs)

    # the library's names
    def predict_acc(self, archs: list[dict[str, Any]]) -> Any:
        return self._call(archs, raw=False)

    def get_efficiency(self, arch: dict[str, Any]) -> Any:
        return self._call(arch, raw=False)

    # the tutorial's names
    def predict_accuracy(self, archs: list[dict[str, Any]]) -> Any:
        return self._call(archs, raw=True)

    def predict_efficiency(self, arch: dict[str, Any]) -> Any:
        return self._call(arch, raw=True)


# ---------------------------------------------------------------------- ours
def have_ours() -> bool:
    """Whether ``nas.search.specialize`` exists (the benchmark runs OFA's half without it)."""
    try:
        from nas.search import specialize  # noqa: F401
    except (ImportError, AttributeError):
        return False
    return True


def _arch_dict(x: Any) -> dict[str, Any]:
    if hasattr(x, "to_dict"):
        return dict(x.to_dict())
    if isinstance(x, str):
        return _arch_dict(json.loads(x))
    if isinstance(x, dict) and "ks" in x:
        return x
    if isinstance(x, dict) and "arch" in x:
        return _arch_dict(x["arch"])
    raise TypeError(f"not an architecture: {x!r}")


def _claimed_latency(entry: dict[str, Any]) -> float | None:
    lat = entry.get("latency_ms")
    if isinstance(lat, dict) and DEVICE in lat:
        return float(lat[DEVICE])
    for key in (METRIC, "latency"):
        if key in entry:
            return float(entry[key])
    return None


def _best_entry(res: Any, budget: float) -> dict[str, Any] | None:
    """The subnet the search itself calls its best under ``budget`` (``res.best`` is keyed
    like ``"latency:note10<=20"``), else the most accurate of its front within it."""
    best = getattr(res, "best", None)
    if isinstance(best, dict) and best:
        key = f"{METRIC}<={budget:g}"
        if key in best:
            return best[key]  # type: ignore[no-any-return]
        if len(best) == 1:
            return next(iter(best.values()))  # type: ignore[no-any-return]
    feasible = [e for e in res.front if (_claimed_latency(e) or 0.0) <= budget]
    return max(feasible, key=lambda e: float(e["accuracy"]), default=None)


def ours(objectives: list[str], budget: float, seed: int, population: int | None,
         generations: int | None, **extra: Any) -> tuple[Any, float]:
    """One call of our ``specialize`` and its wall seconds (by this clock)."""
    from nas.search import specialize

    kw: dict[str, Any] = dict(extra)
    if population is not None:
        kw["population"] = population
    if generations is not None:
        kw["generations"] = generations
    t = time.perf_counter()
    res = specialize(space="ofa_mbv3", proxy="ofa-imagenet", objectives=objectives,
                     constraints={METRIC: budget}, seed=seed, **kw)
    return res, time.perf_counter() - t


# ---------------------------------------------------------------------- state
class State:
    """Finished runs, one JSON line each, keyed by (part, budget, seed) and the options."""

    def __init__(self, path: Path, fingerprint: str, fresh: bool) -> None:
        self.path, self.fp = path, fingerprint
        path.parent.mkdir(parents=True, exist_ok=True)
        if fresh:
            path.unlink(missing_ok=True)
        self.done: dict[tuple[str, float, int], dict[str, Any]] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:  # a line cut by a kill
                    continue
                if rec.get("fingerprint") == fingerprint:
                    self.done[(rec["part"], float(rec["budget"]), int(rec["seed"]))] = rec

    def get(self, part: str, budget: float, seed: int) -> dict[str, Any] | None:
        return self.done.get((part, float(budget), int(seed)))

    def add(self, rec: dict[str, Any]) -> None:
        rec = {**rec, "fingerprint": self.fp}
        self.done[(rec["part"], float(rec["budget"]), int(rec["seed"]))] = rec
        with self.path.open("a") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())


def fingerprint(args: argparse.Namespace) -> str:
    opts = {k: getattr(args, k) for k in ("ofa_finder", "ofa_population", "ofa_generations",
                                          "population", "generations")}
    return hashlib.sha256(json.dumps(opts, sort_keys=True).encode()).hexdigest()[:12]


# ---------------------------------------------------------------------- runs
def rescore(R: Reference, arch: dict[str, Any], budget: float) -> dict[str, Any]:
    acc, lat = R.accuracy(arch), R.latency(arch)
    return {"arch": ref.spec(arch), "accuracy": acc, "latency_ms": lat,
            "within": lat is not None and lat <= budget}


def run_budgets(args: argparse.Namespace, R: Reference, st: State, log: Any) -> None:
    for b in args.budgets:
        for s in args.seeds:
            if st.get("ofa", b, s) is None:
                out = R.search(b, s, args.ofa_population, args.ofa_generations)
                rec = {"part": "ofa", "budget": b, "seed": s, **rescore(R, out["arch"], b),
                       **{k: out[k] for k in ("claimed_accuracy", "seconds", "n_scored",
                                              "n_priced")}}
                st.add(rec)
                log(f"  OFA  {b:g} ms seed {s}: {rec['accuracy']:.4f} at "
                    f"{rec['latency_ms']:.2f} ms, {rec['seconds']:.1f} s")
            if st.get("ours", b, s) is None and have_ours():
                res, wall = ours(["accuracy"], b, s, args.population, args.generations)
                entry = _best_entry(res, b)
                rec = {"part": "ours", "budget": b, "seed": s, "seconds": wall,
                       "own_seconds": getattr(res, "seconds", None),
                       "n_scored": getattr(res, "n_scored", None)}
                if entry is None:
                    rec.update(arch=None, accuracy=None, latency_ms=None, within=False)
                else:
                    rec.update(rescore(R, _arch_dict(entry), b),
                               claimed_accuracy=float(entry["accuracy"]),
                               claimed_latency_ms=_claimed_latency(entry))
                st.add(rec)
                log(f"  ours {b:g} ms seed {s}: {_f(rec['accuracy'], 4)} at "
                    f"{_f(rec['latency_ms'])} ms, {wall:.3f} s")


def front_record(R: Reference, part: str, budget: float, seed: int, res: Any, wall: float,
                 budgets: list[float]) -> dict[str, Any]:
    """A front re-scored by OFA: every member's accuracy and latency, and the best within
    each of ``budgets``."""
    members = [rescore(R, _arch_dict(e), budget) for e in res.front]
    best = {}
    for b in budgets:
        ok = [m for m in members if m["latency_ms"] is not None and m["latency_ms"] <= b
              and m["accuracy"] is not None]
        top = max(ok, key=lambda m: m["accuracy"], default=None)
        best[str(b)] = None if top is None else {k: top[k] for k in ("arch", "accuracy",
                                                                     "latency_ms")}
    return {"part": part, "budget": budget, "seed": seed, "seconds": wall,
            "own_seconds": getattr(res, "seconds", None),
            "n_scored": getattr(res, "n_scored", None), "front_size": len(members),
            "best": best}


def run_front(args: argparse.Namespace, R: Reference, st: State, log: Any) -> None:
    for s in args.seeds:
        if st.get("front", args.front_budget, s) is None and have_ours():
            res, wall = ours(["accuracy", METRIC], args.front_budget, s, args.population,
                             args.generations)
            rec = front_record(R, "front", args.front_budget, s, res, wall, args.budgets)
            st.add(rec)
            log(f"  ours whole front <= {args.front_budget:g} ms seed {s}: "
                f"{rec['front_size']} subnets, {wall:.3f} s")
        if st.get("front_refined", args.front_budget, s) is None and have_ours():
            # the same front, then a short search under each budget warm-started from it
            res, wall = ours(["accuracy", METRIC], args.front_budget, s, args.population,
                             args.generations, refine=True,
                             budgets={METRIC: [b for b in args.budgets
                                               if b < args.front_budget]})
            rec = front_record(R, "front_refined", args.front_budget, s, res, wall,
                               args.budgets)
            st.add(rec)
            log(f"  ours whole front, refined per budget, seed {s}: {wall:.3f} s")


# ---------------------------------------------------------------------- published
_NAME = re.compile(r"^note10_lat-(\d+)ms_top1-([\d.]+)_finetune-(\d+)$")


def published(args: argparse.Namespace, R: Reference, st: State, log: Any
              ) -> list[dict[str, Any]]:
    """OFA's Note10 subnets: converted, priced by the converted table, scored by
    ``ofa-imagenet`` where it applies, next to the best of our whole front at their
    latencies."""
    from nas.errors import NASError
    from nas.latency import load_predictor
    from nas.proxies import load_accuracy_predictor
    from nas.proxies._ofa import shipped_accuracy_predictor_path
    from nas.space import get_space, read_ofa_subnet

    ofa_acc = load_accuracy_predictor(shipped_accuracy_predictor_path("ofa-imagenet"))
    rows = []
    found = [(m, p) for p in (args.ofa_files / "ofa_specialized").glob("note10_*")
             if (m := _NAME.match(p.name)) is not None]
    for m, folder in sorted(found, key=lambda mp: int(mp[0].group(1))):
        arch = read_ofa_subnet(folder)
        sp = get_space(arch.space)
        pred = load_predictor(DEVICE, arch.space, kind="table")
        row: dict[str, Any] = {
            "name": folder.name, "space": arch.space, "width": "1.2" if "w12" in arch.space
            else "1.0", "r": arch.r, "name_ms": float(m.group(1)),
            "top1": float(m.group(2)), "finetune": int(m.group(3)), "arch": arch.to_dict()}
        try:
            row["table_ms"] = float(pred.predict([arch])[0])
        except NASError as exc:
            row["table_ms"], row["table_error"] = None, str(exc)
            # the table kind's opt-in interpolation between its resolutions, where it has it
            if hasattr(pred, "interpolate"):
                pred.interpolate = True
                try:
                    row["table_ms_interpolated"] = float(pred.predict([arch])[0])
                except NASError:
                    pass
                finally:
                    pred.interpolate = False
            # its price at the table's resolutions around it (what a deployment at one of
            # them would cost)
            row["table_ms_near"] = {}
            for r in ref.TABLE_RESOLUTIONS:
                if abs(r - arch.r) < 16 or (arch.r > max(ref.TABLE_RESOLUTIONS)
                                            and r == max(ref.TABLE_RESOLUTIONS)):
                    near = sp.parse({**arch.to_dict(), "r": r})
                    row["table_ms_near"][r] = float(pred.predict([near])[0])
        row["ofa_table_ms"] = R.latency(arch.to_dict())
        if arch.space == "ofa_mbv3":
            row["accuracy"] = float(ofa_acc.predict([arch])[0])
            row["ofa_accuracy"] = R.accuracy(arch.to_dict())
        rows.append(row)
    wide = max([args.wide_budget] + [r["name_ms"] for r in rows]
               + [r["table_ms"] for r in rows if r["table_ms"] is not None])
    budgets = sorted({r["name_ms"] for r in rows}
                     | {r["table_ms"] for r in rows if r["table_ms"] is not None})
    for s in args.seeds[:1] if have_ours() else []:
        rec = st.get("wide", wide, s)
        if rec is None:
            res, wall = ours(["accuracy", METRIC], wide, s, args.population, args.generations)
            rec = front_record(R, "wide", wide, s, res, wall, budgets)
            st.add(rec)
            log(f"  ours whole front <= {wide:g} ms seed {s}: {rec['front_size']} subnets, "
                f"{wall:.3f} s")
        runs = {}
        for b in budgets:  # and a run of ours per budget
            one = st.get("pubrun", b, s)
            if one is None:
                try:
                    res, wall = ours(["accuracy"], b, s, args.population, args.generations)
                except NASError as exc:  # a budget below every subnet's price
                    one = {"part": "pubrun", "budget": b, "seed": s, "accuracy": None,
                           "error": str(exc)}
                else:
                    entry = _best_entry(res, b)
                    one = {"part": "pubrun", "budget": b, "seed": s, "seconds": wall,
                           **(rescore(R, _arch_dict(entry), b) if entry is not None
                              else {"accuracy": None})}
                st.add(one)
            runs[b] = one
        for row in rows:
            row["ours_at_name"] = rec["best"].get(str(row["name_ms"]))
            row["ours_run_at_name"] = runs.get(row["name_ms"])
            if row["table_ms"] is not None:
                row["ours_at_table"] = rec["best"].get(str(row["table_ms"]))
                row["ours_run_at_table"] = runs.get(row["table_ms"])
        log(f"  (published: the whole front of seed {s} under {wide:g} ms "
            f"({rec['seconds']:.3f} s), and a run of ours per budget)")
    return rows


# ---------------------------------------------------------------------- report
def _f(v: float | None, nd: int = 2) -> str:
    return "—" if v is None else f"{v:.{nd}f}"


def _cells(rec: dict[str, Any] | None, nd_s: int) -> list[str]:
    """Accuracy, latency, within, seconds of one run (blank when it did not run)."""
    if rec is None:
        return ["—", "—", "", "—"]
    return [_f(rec["accuracy"], 4), _f(rec["latency_ms"]),
            "yes" if rec["within"] else "**no**", _f(rec["seconds"], nd_s)]


def summarize(args: argparse.Namespace, st: State) -> dict[str, Any]:
    per_budget: list[dict[str, Any]] = []
    run_rows: list[list[object]] = []
    fronts = [f for s in args.seeds if (f := st.get("front", args.front_budget, s)) is not None]
    refined = [f for s in args.seeds
               if (f := st.get("front_refined", args.front_budget, s)) is not None]
    for b in args.budgets:
        for s in args.seeds:
            run_rows.append([f"{b:g}", s, *_cells(st.get("ofa", b, s), 1),
                             *_cells(st.get("ours", b, s), 3)])
        o = [a for s in args.seeds if (a := st.get("ofa", b, s)) is not None]
        u = [c for s in args.seeds if (c := st.get("ours", b, s)) is not None]
        if not o or not u:
            continue
        oa = median([a["accuracy"] for a in o])
        ua = median([c["accuracy"] if c["accuracy"] is not None else float("-inf")
                     for c in u])
        ot, ut = median([a["seconds"] for a in o]), median([c["seconds"] for c in u])
        fa = [f["best"].get(str(b)) for f in fronts]
        fa_acc = [x["accuracy"] for x in fa if x is not None]
        ra = [f["best"].get(str(b)) for f in refined]
        ra_acc = [x["accuracy"] for x in ra if x is not None]
        per_budget.append({
            "budget": b, "ofa_accuracy": oa, "ours_accuracy": ua, "delta": ua - oa,
            "ofa_within": sum(a["within"] for a in o), "ours_within": sum(c["within"] for c in u),
            "n": len(u), "ofa_seconds": ot, "ours_seconds": ut, "time_ratio": ut / ot,
            "front_accuracy": median(fa_acc) if fa_acc else None,
            "front_delta": (median(fa_acc) - oa) if fa_acc else None,
            "refined_accuracy": median(ra_acc) if ra_acc else None,
            "refined_delta": (median(ra_acc) - oa) if ra_acc else None,
            "ofa_n_scored": median([a["n_scored"] for a in o]),
            "ofa_n_priced": median([a["n_priced"] for a in o]),
            "ours_n_scored": median([c["n_scored"] for c in u])
            if all(c["n_scored"] is not None for c in u) else None,
        })
    front_s = median([f["seconds"] for f in fronts]) if fronts else None
    refined_s = median([f["seconds"] for f in refined]) if refined else None
    checks = {}
    if per_budget and len(per_budget) == len(args.budgets):
        checks = {
            f"accuracy >= OFA's - {ACC_TOL} (median) at every budget":
                all(p["delta"] >= -ACC_TOL for p in per_budget),
            "within budget by OFA's table, every seed":
                all(p["ours_within"] == p["n"] for p in per_budget),
            "time <= 1/10 of OFA's at every budget":
                all(p["time_ratio"] <= 0.1 for p in per_budget),
        }
        if front_s is not None:
            checks["whole front < OFA's time for one budget (its fastest)"] = \
                front_s < min(p["ofa_seconds"] for p in per_budget)
    return {"per_budget": per_budget, "run_rows": run_rows, "front_seconds": front_s,
            "refined_seconds": refined_s, "fronts": fronts, "checks": checks}


def report(args: argparse.Namespace, summary: dict[str, Any], pub: list[dict[str, Any]],
           out: Any) -> None:
    def p(s: str = "") -> None:
        print(s, file=out, flush=True)

    finder = {"library": "ofa.nas.search_algorithm.EvolutionFinder",
              "tutorial": "ofa.tutorial.evolution_finder.EvolutionFinder"}[args.ofa_finder]
    if summary["run_rows"]:
        p(f"\n### Every run (OFA: {finder}, population {args.ofa_population}, "
          f"{args.ofa_generations} generations; accuracy and latency re-scored by OFA's "
          "predictor and Note10 table)\n")
        p(table(["budget ms", "seed", "OFA acc", "OFA ms", "OFA within", "OFA s", "ours acc",
                 "ours ms", "ours within", "ours s"], summary["run_rows"]))
    pb = summary["per_budget"]
    if pb:
        p(f"\n### Per budget: medians over {len(args.seeds)} seeds\n")
        rows = [[f"{x['budget']:g}", f"{x['ofa_accuracy']:.4f}", f"{x['ours_accuracy']:.4f}",
                 f"{x['delta']:+.4f}", f"{x['ours_within']}/{x['n']}",
                 f"{x['ofa_seconds']:.1f}", f"{x['ours_seconds']:.3f}",
                 f"1/{1 / x['time_ratio']:.0f}" if x["time_ratio"] > 0 else "—",
                 _f(x["front_accuracy"], 4),
                 "—" if x["front_delta"] is None else f"{x['front_delta']:+.4f}",
                 _f(x["refined_accuracy"], 4),
                 "—" if x["refined_delta"] is None else f"{x['refined_delta']:+.4f}"]
                for x in pb]
        fs = summary["front_seconds"]
        if fs is not None:
            fastest = min(x["ofa_seconds"] for x in pb)
            rows.append([f"whole front <= {args.front_budget:g}", "", "", "", "",
                         f"{fastest:.1f} (fastest budget)", f"{fs:.3f}",
                         f"1/{fastest / fs:.0f}", "(per budget above)", "", "", ""])
            rs = summary["refined_seconds"]
            if rs is not None:
                rows.append([f"whole front <= {args.front_budget:g}, refined per budget", "",
                             "", "", "", f"{fastest:.1f} (fastest budget)", f"{rs:.3f}",
                             f"1/{fastest / rs:.0f}", "", "", "(per budget above)", ""])
        p(table(["budget ms", "OFA acc", "ours acc", "ours - OFA", "ours within",
                 "OFA s", "ours s", "time ours/OFA", "whole front: acc", "front - OFA",
                 "refined front: acc", "refined - OFA"], rows))
        n_o = pb[0]["ofa_n_scored"]
        n_u = pb[0]["ours_n_scored"]
        p(f"\nsubnets scored per run: OFA {n_o:,.0f}" + (f", ours {n_u:,.0f}" if n_u else "")
          + "; OFA's latency lookups per run (median; its rejection sampling redraws every "
          "child over budget): " + ", ".join(f"{x['budget']:g} ms {x['ofa_n_priced']:,.0f}"
                                              for x in pb))
    if summary["checks"]:
        p("\n### The issue's targets\n")
        for name, ok in summary["checks"].items():
            p(f"- {'PASS' if ok else 'FAIL'}  {name}")
    if pub:
        p("\n### OFA's published Note10 subnets\n")
        rows = []
        for r in pub:
            if r["table_ms"] is not None:
                tab = f"{r['table_ms']:.2f}"
            elif r.get("table_ms_near"):
                interp = r.get("table_ms_interpolated")
                tab = f"off table (r={r['r']}): " + ", ".join(
                    [f"{v:.2f} at r={k}" for k, v in r["table_ms_near"].items()]
                    + ([f"{interp:.2f} interpolated"] if interp is not None else []))
            else:
                tab = "—"

            def best(x: dict[str, Any] | None) -> str:
                if x is None:
                    return "—"
                if x.get("accuracy") is None:
                    return "none (infeasible)" if x.get("error") else "none"
                return f"{x['accuracy']:.4f} ({x['latency_ms']:.2f} ms)"
            rows.append([r["name"], r["width"], r["r"], f"{r['name_ms']:g}", tab,
                         f"{r['top1']:.1f}", _f(r.get("accuracy"), 4),
                         best(r.get("ours_run_at_name")), best(r.get("ours_at_name")),
                         best(r.get("ours_run_at_table")), best(r.get("ours_at_table"))])
        p(table(["subnet", "width", "r", "name ms", "table ms", "published top-1 %",
                 "ofa-imagenet", "ours <= name ms: run", "ours <= name ms: front",
                 "ours <= table ms: run", "ours <= table ms: front"], rows))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = sys.stderr if args.json is not None and str(args.json) == "-" else sys.stdout

    def log(s: str) -> None:
        print(s, file=sys.stderr, flush=True)

    if not ref.ofa_installed():
        print("the ofa package is not installed (pip install --no-deps ofa): it is the "
              "reference this benchmark runs", file=sys.stderr)
        return 2
    for name in ("acc_predictor.pth", "note10"):
        if not (args.ofa_files / name).exists():
            print(f"--ofa-files {args.ofa_files}: {name} is missing (OFA's published files "
                  "expected)", file=sys.stderr)
            return 2
    if args.quick:
        args.fresh = True
    cmd = "python experiments/benchmarks/ofa_specialize.py " + " ".join(sys.argv[1:])
    print(header("Specialization for Note10 budgets: OFA's EvolutionFinder against ours",
                 cmd.strip()), file=out)
    t0 = time.perf_counter()
    R = Reference(args.ofa_files, args.ofa_finder)
    st = State(args.state, fingerprint(args), args.fresh)
    if not have_ours():
        log("nas.search.specialize is not there: our side is skipped, OFA's runs alone")
    elif "budgets" in args.parts or "front" in args.parts:
        # one call of ours beforehand (not timed): imports and loading once, as OFA's
        # predictor and table are loaded once above
        ours(["accuracy"], args.budgets[0], 0, args.population, 2)
    if "budgets" in args.parts:
        run_budgets(args, R, st, log)
    if "front" in args.parts:
        run_front(args, R, st, log)
    pub = published(args, R, st, log) if "published" in args.parts else []
    summary = summarize(args, st)
    report(args, summary, pub, out)
    print(f"\nthis run: {(time.perf_counter() - t0) / 60:.1f} minutes", file=out)
    if args.json is not None:
        doc = {"options": {k: (str(v) if isinstance(v, Path) else v)
                           for k, v in vars(args).items()},
               "runs": [v for k, v in sorted(st.done.items(), key=lambda kv: str(kv[0]))],
               "per_budget": summary["per_budget"], "front_seconds": summary["front_seconds"],
               "checks": summary["checks"], "published": pub}
        text = json.dumps(doc, indent=1, default=str)
        if str(args.json) == "-":
            print(text)
        else:
            args.json.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
