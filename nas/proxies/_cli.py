"""``nas proxies ...`` (score architectures) and ``nas accuracy fit`` (accuracy predictors)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from nas._cli_utils import (
    MAX_ARCHS,
    CheckpointOpt,
    JsonOpt,
    OldTorchDeviceOpt,
    OverwriteOpt,
    SpaceOpt,
    TorchDeviceOpt,
    console,
    print_json,
    require_torch_device,
    seed_option,
)
from nas._outputs import check_apart, check_output
from nas.errors import ArchitectureError, ConfigError

if TYPE_CHECKING:  # torch is imported by the commands that need it
    import numpy as np

    from nas.proxies import AccuracyPredictor, Proxy, ProxyContext
    from nas.space import Architecture, SearchSpace

__all__ = ["register"]

proxies_app = typer.Typer(help="Accuracy proxies: score architectures (higher = predicted "
                          "better).", no_args_is_help=True)
accuracy_app = typer.Typer(help="Learned accuracy predictors.", no_args_is_help=True)

DataOpt = Annotated[str | None, typer.Option(
    "--data", "-d", help="Dataset: image folder, .tar.gz, CIFAR-10 folder/archive, .npz or "
    "'digits' (default: the one the checkpoint was trained on). Proxies see its training "
    "images and validation slice only.")]
SeedOpt = Annotated[int, seed_option("Seed of the batches and initial weights the proxies use",
                                     "--seed")]
ValLimitOpt = Annotated[int | None, typer.Option(
    "--val-limit", min=1, help="Score accuracy on at most this many validation images.")]
BnOpt = Annotated[int, typer.Option("--bn-batches", min=1, help="Training batches for "
                                    "BatchNorm recalibration.")]
CacheOpt = Annotated[Path | None, typer.Option(
    "--cache", help="SQLite cache of scores (default: next to the checkpoint, else "
    "~/.cache/nas/proxies.sqlite).")]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Neither read nor write cached "
                                          "scores.")]


def _read_archs(space: SearchSpace, path: Path) -> list[Architecture]:
    """Architectures from a .jsonl file (one per line) or a JSON list; none is an error."""
    archs = space.parse_file(path)
    if not archs:
        raise ArchitectureError(f"{path} holds no architectures")
    return archs


def _context(space: str, checkpoint: Path | None, data: str | None, device: str, seed: int,
             val_limit: int | None, bn_batches: int, cache: Path | None,
             no_cache: bool) -> ProxyContext:
    from nas.proxies import ProxyContext

    if cache is not None and not no_cache:  # scores are written to it
        given_data = data if data and Path(data).exists() else None
        check_apart(cache, "--cache", [("--checkpoint", checkpoint), ("--data", given_data)])
    if device != "cpu":  # torch only for a GPU: proxies like macs do without it
        import torch

        require_torch_device(device, torch)
    if data is None and checkpoint is not None:
        from nas.supernet import read_checkpoint_meta

        data = (read_checkpoint_meta(checkpoint)["extra"].get("data") or {}).get("source")
    cache_arg: Path | bool = False if no_cache else (cache if cache is not None else True)
    return ProxyContext.build(space, checkpoint=checkpoint, data=data, cache=cache_arg,
                              device=device, seed=seed, val_limit=val_limit,
                              bn_batches=bn_batches)


# ---------------------------------------------------------------------- proxies
@proxies_app.command("list")
def proxies_list(json_out: JsonOpt = False) -> None:
    """List the proxies, their options and what they need."""
    from nas.proxies import list_proxies, proxy_class

    rows: list[dict[str, Any]] = []
    for name in list_proxies():
        cls = proxy_class(name)
        rows.append({"name": name, "description": cls.description, "tags": sorted(cls.tags),
                     "options": cls.options,
                     "choices": {k: list(v) for k, v in cls.option_choices().items()},
                     "needs_checkpoint": cls.needs_supernet, "needs_data": cls.needs_data})
    if json_out:
        print_json(rows)
        return
    table = Table("proxy", "needs", "options", "spaces", "description")
    for r in rows:
        needs = "+".join(k for k, v in (("checkpoint", r["needs_checkpoint"]),
                                        ("data", r["needs_data"])) if v) or "-"
        opts = ", ".join(f"{k}={v}" + (f" ({'|'.join(r['choices'][k])})"
                                        if k in r["choices"] else "")
                         for k, v in r["options"].items()) or "-"
        table.add_row(r["name"], needs, opts, ", ".join(r["tags"]) or "all", r["description"])
    console.print(table)
    console.print("All scores: higher = predicted better. Options: --proxy "
                  "'name:key=value,...', e.g. 'zico:weights=inherited'.")


@proxies_app.command("eval")
def proxies_eval(
    space: SpaceOpt,
    arch_file: Annotated[Path, typer.Option(
        "--arch-file", "-f", help="Architectures, one JSON object per line (.jsonl, as "
        "`nas spaces sample --jsonl` writes) or a JSON list.")],
    proxy: Annotated[list[str], typer.Option(
        "--proxy", "-p", help="Proxy name, optionally with options 'name:key=value'; "
        "repeat for several (`nas proxies list`).")],
    checkpoint: CheckpointOpt = None,
    data: DataOpt = None,
    device: TorchDeviceOpt = "cpu",
    old_device: OldTorchDeviceOpt = None,
    seed: SeedOpt = 0,
    val_limit: ValLimitOpt = None,
    bn_batches: BnOpt = 8,
    cache: CacheOpt = None,
    no_cache: NoCacheOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Score architectures with one or more proxies (cached per checkpoint, arch and proxy)."""
    from nas.proxies import get_proxy

    proxies = [get_proxy(p) for p in proxy]  # unknown names fail before any loading
    if cache is not None and not no_cache:
        check_apart(cache, "--cache", [("--arch-file", arch_file)])
    ctx = _context(space, checkpoint, data, device, seed, val_limit, bn_batches, cache, no_cache)
    archs = _read_archs(ctx.space, arch_file)
    costs = ctx.space.costs(archs)
    scores: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for p in proxies:
        t0 = time.perf_counter()
        scores[p.spec] = p.score(archs, ctx)
        seconds[p.spec] = round(time.perf_counter() - t0, 3)
    rows: list[dict[str, Any]] = [
        {"hash": a.hash, "arch": a.to_dict(), "macs": int(costs["macs"][i]),
         "params": int(costs["params"][i]),
         "scores": {k: float(v[i]) for k, v in scores.items()}}
        for i, a in enumerate(archs)]
    if json_out:
        print_json({"space": ctx.space.name,
                    "checkpoint": str(checkpoint) if checkpoint else None,
                    "seconds": seconds, "archs": rows})
        return
    table = Table("hash", "r", "MACs (M)", *scores)
    for r in rows:
        table.add_row(r["hash"], str(r["arch"]["r"]), f"{r['macs'] / 1e6:.1f}",
                      *(f"{v:.5g}" for v in r["scores"].values()))
    console.print(table)


# ---------------------------------------------------------------------- accuracy
#: the accuracy predictor kind ``nas accuracy fit`` fits unless told
DEFAULT_MODEL = "mlp"

ModelOpt = Annotated[str, typer.Option(
    "--model", "-m", help="Accuracy predictor kind: mlp (Once-for-All's), gbdt, or any other "
    "registered one (`nas accuracy kinds`).")]


@accuracy_app.command("kinds")
def accuracy_kinds(json_out: JsonOpt = False) -> None:
    """List the registered accuracy predictor kinds: what each is, its default encoding,
    whether it takes zero-cost scores as extra features (--zero-cost), and which one `nas
    accuracy fit` uses by default."""
    from nas.proxies import ACCURACY_PREDICTORS

    rows: list[dict[str, Any]] = []
    for name, cls in ACCURACY_PREDICTORS.items():
        field = cls.Options.model_fields.get("encoding")
        rows.append({"name": name, "description": cls.description, "tags": sorted(cls.tags),
                     "kind": cls.kind, "default": name == DEFAULT_MODEL,
                     "encoding": field.default if field is not None else cls.encoding,
                     "takes_extra_features": bool(cls.takes_extra_features)})
    if json_out:
        print_json(rows)
        return
    table = Table("kind", "what it is", "encoding", "--zero-cost",
                  title="accuracy predictor kinds")
    for r in rows:
        table.add_row(str(r["name"]) + (" (default)" if r["default"] else ""),
                      str(r["description"]), str(r["encoding"]),
                      "yes" if r["takes_extra_features"] else "-")
    console.print(table)


@accuracy_app.command("fit")
def accuracy_fit(
    space: SpaceOpt,
    checkpoint: Annotated[Path, typer.Option("--checkpoint", "-c", help="Trained supernet.")],
    data: DataOpt = None,
    model: ModelOpt = DEFAULT_MODEL,
    n_train: Annotated[int, typer.Option("--n-train", min=2, max=MAX_ARCHS,
                                         help="Sampled subnets to fit "
                                         "on.")] = 100,
    n_test: Annotated[int, typer.Option("--n-test", min=2, max=MAX_ARCHS,
                                        help="Other sampled subnets to "
                                        "report the error on.")] = 100,
    zero_cost: Annotated[list[str] | None, typer.Option(
        "--zero-cost", "-z", help="Zero-cost proxies added as features (for predictors that "
        "take extra features, e.g. gbdt); repeat.")] = None,
    device: TorchDeviceOpt = "cpu",
    old_device: OldTorchDeviceOpt = None,
    seed: SeedOpt = 0,
    val_limit: ValLimitOpt = None,
    bn_batches: BnOpt = 8,
    cache: CacheOpt = None,
    no_cache: NoCacheOpt = False,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Save the fitted predictor as JSON (then search with "
        "--proxy predictor:path=FILE).")] = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Fit an accuracy predictor on the inherited accuracies of N random subnets and report
    its held-out RMSE (accuracy points) and Kendall tau on other random subnets."""
    from nas.proxies import ACCURACY_PREDICTORS, get_proxy, make_accuracy_predictor

    if out is not None:
        given_data = data if data and Path(data).exists() else None  # not "digits"
        check_output(out, inputs=[("--checkpoint", checkpoint), ("--data", given_data),
                                  ("--cache", cache)],
                     overwrite=overwrite, example="predictor.json")
    if model not in ACCURACY_PREDICTORS:
        raise ConfigError(f"--model = {model!r}: must be one of "
                          f"{', '.join(ACCURACY_PREDICTORS.names())}")
    est = make_accuracy_predictor(model)
    zc = [get_proxy(z) for z in zero_cost or []]
    if zc and not est.takes_extra_features:
        kinds = [k for k, c in ACCURACY_PREDICTORS.items() if c.takes_extra_features]
        raise ConfigError(f"--zero-cost features need a --model that takes extra features: "
                          f"{', '.join(kinds)}")
    if zc and out is not None:
        raise ConfigError("a predictor with --zero-cost features cannot be saved for "
                          "searches (they would need the zero-cost scores too)")
    ctx = _context(space, checkpoint, data, device, seed, val_limit, bn_batches, cache, no_cache)
    res, y = _fit_and_test(est, ctx, zc, n_train, n_test, seed)
    res["model"] = model
    if out is not None:
        from nas.proxies import checkpoint_sha256, save_accuracy_predictor

        est.space = ctx.space.name
        save_accuracy_predictor(est, out, space=ctx.space.name, checkpoint=str(checkpoint),
                                checkpoint_sha256=checkpoint_sha256(checkpoint),
                                metrics={k: v for k, v in res.items() if k != "seconds"})
        res["out"] = str(out)
    if json_out:
        print_json(res)
        return
    console.print(f"{model} on {res['features']}: fitted on {n_train} subnets; on {n_test} "
                  f"others RMSE {res['rmse_points']:.2f} points, Kendall tau "
                  f"{res['kendall_tau']:.3f}, Spearman rho {res['spearman_rho']:.3f} "
                  f"(their accuracy {y.mean() * 100:.1f} +- {y.std() * 100:.1f}%)")


def _fit_and_test(est: AccuracyPredictor, ctx: ProxyContext, zc: list[Proxy], n_train: int,
                  n_test: int, seed: int) -> tuple[dict[str, Any], np.ndarray]:
    """Fit ``est`` on the first ``n_train`` of ``n_train + n_test`` sampled subnets and test
    it on the others; returns the result row and the test accuracies."""
    from nas.proxies import accuracy_features, get_proxy, rank_metrics

    t0 = time.perf_counter()
    archs = ctx.space.sample_many(n_train + n_test, seed=seed)
    acc = get_proxy("inherited").score(archs, ctx)
    extra = {z.spec: z.score(archs, ctx) for z in zc} or None
    X = accuracy_features(ctx.space, archs, kind=est.encoding, extra=extra)
    est.fit(X[:n_train], acc[:n_train])
    pred = est.predict(X[n_train:])
    y = acc[n_train:]
    res = {"model": est.kind, "features": est.encoding + "".join(f"+{z.spec}" for z in zc),
           "n_train": n_train, "n_test": n_test,
           "rmse_points": float(((pred - y) ** 2).mean() ** 0.5 * 100),
           **{k: v for k, v in rank_metrics(y, pred).items() if k != "n"},
           "test_acc_mean": float(y.mean()), "test_acc_std": float(y.std()),
           "seconds": round(time.perf_counter() - t0, 2)}
    return res, y


@accuracy_app.command("import-ofa")
def accuracy_import_ofa(
    src: Annotated[Path, typer.Argument(help="OFA's acc_predictor.pth (a torch state_dict).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Our predictor file to write "
                                      "(JSON; use it as --proxy predictor:path=FILE).")],
    space: Annotated[str, typer.Option("--space", help="The space it predicts for.")] = "ofa_mbv3",
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Convert Once-for-All's accuracy predictor (acc_predictor.pth) into ours.

    Read with torch.load(weights_only=True): tensors only, never objects. OFA's own file is
    shipped converted: --proxy ofa-imagenet.
    """
    check_output(out, inputs=[("SRC", src)], overwrite=overwrite, example="predictor.json")
    from nas.proxies._ofa import import_ofa_accuracy_predictor

    path = import_ofa_accuracy_predictor(src, out, space)
    if json_out:
        print_json({"out": str(path), "space": space, "kind": "ofa"})
    else:
        console.print(f"converted {src} -> {path} (kind ofa, space {space}); use it as "
                      f"--proxy predictor:path={path}")


def register(app: typer.Typer) -> None:
    """Add the ``proxies`` and ``accuracy`` groups to the root app."""
    app.add_typer(proxies_app, name="proxies")
    app.add_typer(accuracy_app, name="accuracy")
