"""Foundation commands: ``spaces``, ``arch``, ``supernet``, ``export``, ``verify``, ``demo``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from nas._cli_utils import console, print_json

__all__ = ["register"]

spaces_app = typer.Typer(help="List, inspect and sample search spaces.", no_args_is_help=True)
arch_app = typer.Typer(help="Inspect architectures.", no_args_is_help=True)
supernet_app = typer.Typer(help="Create and inspect supernet checkpoints.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]
SpaceOpt = Annotated[
    str, typer.Option("--space", "-s", help="Search space name (`nas spaces list`).")
]
ArchOpt = Annotated[
    str,
    typer.Option("--arch", "-a", help='Architecture in OFA format: JSON text '
                 '\'{"ks": [...], "e": [...], "d": [...], "r": 224}\' or @file.json.'),
]


def _fmt_count(n: int) -> str:
    return f"{n:.3e}" if n >= 10**6 else str(n)


def _arch_row(space: Any, arch: Any) -> dict[str, Any]:
    c = space.costs([arch])
    return {"hash": arch.hash, "arch": arch.to_dict(), "macs": int(c["macs"][0]),
            "params": int(c["params"][0])}


# ---------------------------------------------------------------------- spaces
@spaces_app.command("list")
def spaces_list(json_out: JsonOpt = False) -> None:
    """List the registered search spaces."""
    from nas.space import get_space, list_spaces

    rows: list[dict[str, Any]] = []
    for name in list_spaces():
        sp = get_space(name)
        rows.append({"name": name, "description": sp.spec.description,
                     "architectures": sp.size(), "resolutions": list(sp.resolutions)})
    if json_out:
        print_json(rows)
        return
    table = Table("space", "architectures", "resolutions", "description")
    for r in rows:
        res = r["resolutions"]
        table.add_row(r["name"], _fmt_count(r["architectures"]),
                      f"{res[0]}..{res[-1]} ({len(res)})", r["description"])
    console.print(table)


@spaces_app.command("show")
def spaces_show(name: Annotated[str, typer.Argument(help="Space name.")],
                json_out: JsonOpt = False) -> None:
    """Show a space: its stages, choices, and how many architectures it holds."""
    from dataclasses import asdict

    from nas.space import get_space

    sp = get_space(name)
    info: dict[str, Any] = {
        "name": sp.name, "description": sp.spec.description,
        "architectures": sp.size(), "architectures_times_resolutions": sp.size(True),
        "n_stages": sp.n_stages, "max_depth": sp.max_depth, "n_layer_slots": sp.n_layers,
        "kernel_sizes": list(sp.kernel_sizes), "expand_ratios": list(sp.expand_ratios),
        "depths": list(sp.depths), "resolutions": list(sp.resolutions),
        "spec": asdict(sp.spec),
        "largest": _arch_row(sp, sp.largest()), "smallest": _arch_row(sp, sp.smallest()),
    }
    if json_out:
        print_json(info)
        return
    console.print(f"[bold]{sp.name}[/bold]: {sp.spec.description}")
    console.print(
        f"{_fmt_count(sp.size())} distinct architectures "
        f"(x {len(sp.resolutions)} resolutions = {_fmt_count(sp.size(True))})"
    )
    console.print(f"kernel sizes {list(sp.kernel_sizes)}, expand ratios {list(sp.expand_ratios)}, "
                  f"depths {list(sp.depths)}, resolutions {sp.resolutions[0]}.."
                  f"{sp.resolutions[-1]}")
    s = sp.spec
    table = Table("stage", "width", "stride", "act", "SE", "depth")
    table.add_row("stem", str(s.stem.channels), str(s.stem.stride), s.stem.act, "-", "1")
    table.add_row("first block", str(s.first_block.channels), str(s.first_block.stride),
                  s.first_block.act, "yes" if s.first_block.se else "-", "1")
    for i, st in enumerate(s.stages, 1):
        table.add_row(str(i), str(st.channels), str(st.stride), st.act,
                      "yes" if st.se else "-", "/".join(map(str, sp.depths)))
    table.add_row("head", f"{s.head.final_expand} -> {s.head.feature_mix} -> {s.num_classes}",
                  "", "h_swish", "", "")
    console.print(table)
    for label, key in (("largest", "largest"), ("smallest", "smallest")):
        row = info[key]
        console.print(f"{label}: {row['macs'] / 1e6:.1f}M MACs, {row['params'] / 1e6:.2f}M params")


@spaces_app.command("sample")
def spaces_sample(
    name: Annotated[str, typer.Argument(help="Space name.")],
    n: Annotated[int, typer.Option("--n", "-n", min=1, help="How many architectures.")] = 1,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same sample).")] = 0,
    largest: Annotated[bool, typer.Option("--largest", help="The largest subnet.")] = False,
    smallest: Annotated[bool, typer.Option("--smallest", help="The smallest subnet.")] = False,
    json_out: JsonOpt = False,
    jsonl: Annotated[bool, typer.Option("--jsonl", help="One bare arch per line (an "
                                        "--arch-file for other commands).")] = False,
) -> None:
    """Sample architectures (distinct, uniform per choice), or the largest/smallest."""
    from nas.space import get_space

    sp = get_space(name)
    if largest and smallest:
        raise typer.BadParameter("use --largest or --smallest, not both")
    archs = [sp.largest()] if largest else [sp.smallest()] if smallest else sp.sample_many(n, seed)
    if jsonl:
        for a in archs:
            print(a.to_json())
        return
    rows = [_arch_row(sp, a) for a in archs]
    if json_out:
        print_json(rows)
        return
    table = Table("hash", "r", "d", "MACs (M)", "params (M)", "arch")
    for a, r in zip(archs, rows, strict=True):
        table.add_row(a.hash, str(a.r), "".join(map(str, a.d)), f"{r['macs'] / 1e6:.1f}",
                      f"{r['params'] / 1e6:.2f}", a.to_json())
    console.print(table)


# ---------------------------------------------------------------------- arch
@arch_app.command("info")
def arch_info(space: SpaceOpt, arch: ArchOpt, json_out: JsonOpt = False) -> None:
    """Canonical form, hash, MACs and parameters of an architecture (no model is built)."""
    from nas.space import get_space

    sp = get_space(space)
    a = sp.parse(arch)
    c = sp.costs([a])
    info: dict[str, Any] = {
            "space": sp.name, "hash": a.hash, "arch": a.to_dict(), "resolution": a.r,
            "macs": int(c["macs"][0]), "params": int(c["params"][0]),
            "stage_macs": [int(v) for v in c["stage_macs"][0]],
            "stage_params": [int(v) for v in c["stage_params"][0]]}
    if json_out:
        print_json(info)
        return
    console.print(f"[bold]{sp.name}[/bold] arch {a.hash}  r={a.r}  "
                  f"{info['macs'] / 1e6:.2f}M MACs  {info['params'] / 1e6:.3f}M params")
    table = Table("stage", "depth", "kernels", "expands", "MACs (M)", "params (K)")
    for s, depth in enumerate(a.d):
        sl = slice(s * sp.max_depth, s * sp.max_depth + depth)
        table.add_row(str(s + 1), str(depth), " ".join(map(str, a.ks[sl])),
                      " ".join(map(str, a.e[sl])), f"{info['stage_macs'][s] / 1e6:.2f}",
                      f"{info['stage_params'][s] / 1e3:.1f}")
    console.print(table)
    console.print(f"canonical: {a.to_json()}")


# ---------------------------------------------------------------------- supernet
@supernet_app.command("init")
def supernet_init(
    space: SpaceOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Checkpoint file to write "
                                      "(.safetensors).")],
    seed: Annotated[int, typer.Option(help="Random seed of the initialisation.")] = 0,
    calibrate: Annotated[bool, typer.Option(help="Set BatchNorm statistics from random inputs "
                                            "so eval outputs are of order 1.")] = True,
) -> None:
    """Write a randomly initialised supernet checkpoint."""
    import torch

    from nas.supernet import OFASupernet, save_supernet

    torch.manual_seed(seed)
    net = OFASupernet(space)
    if calibrate:
        net.calibrate_random(seed=seed)
    save_supernet(net, out, meta={"init": "random", "seed": seed, "calibrated": calibrate})
    n = sum(p.numel() for p in net.parameters())
    console.print(f"wrote {out} (space {net.space.name}, {n / 1e6:.2f}M supernet parameters)")


@supernet_app.command("info")
def supernet_info(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint file.")], json_out: JsonOpt = False
) -> None:
    """Show a checkpoint's space and metadata."""
    from nas.supernet import read_checkpoint_meta

    meta = read_checkpoint_meta(checkpoint)
    if json_out:
        print_json(meta)
    else:
        console.print(f"{checkpoint}: space {meta['space']}, format {meta['format']} "
                      f"v{meta['version']}, {json.dumps(meta['extra'])}")


# ---------------------------------------------------------------------- export / verify
def export_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write (must be empty or "
                                      "missing, unless --overwrite); with --study, the folder "
                                      "that receives one trial-NNNN-<hash>/ per subnet.")],
    space: Annotated[str | None, typer.Option(
        "--space", "-s", help="Search space name (`nas spaces list`).")] = None,
    checkpoint: Annotated[Path | None, typer.Option(
        "--checkpoint", "-c", help="Supernet checkpoint (with --study: default the search's).")
    ] = None,
    arch: Annotated[str | None, typer.Option(
        "--arch", "-a", help='Architecture in OFA format: JSON text \'{"ks": [...], "e": [...], '
        '"d": [...], "r": 224}\' or @file.json.')] = None,
    study: Annotated[str | None, typer.Option(
        help="Export subnets of this search (with --trial or --pareto).")] = None,
    storage: Annotated[str | None, typer.Option(
        help="The search's storage (default runs/studies/<study>.journal).")] = None,
    trial: Annotated[list[int] | None, typer.Option(
        "--trial", "-t", help="Trial number of the search to export (repeat).")] = None,
    pareto: Annotated[bool, typer.Option(help="Export the search's whole Pareto front (or its "
                                         "best subnet).")] = False,
    opset: Annotated[int, typer.Option(min=17, help="ONNX opset (17 or newer).")] = 17,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --out.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Export a subnet: model.onnx + weights.safetensors + manifest.json, verified.

    Either one architecture (--space, --checkpoint, --arch) or subnets of a search (--study
    with --trial N or --pareto; weights inherited, BatchNorm recalibrated on the search's
    data, the manifest carrying the search's predictions and measurements). Runs
    onnx.checker and compares ONNX Runtime's output with torch's on random input (max abs
    diff 1e-4); on failure nothing is left in the folder.
    """
    from nas.errors import ConfigError
    from nas.export import export_subnet

    if study is not None:
        if arch is not None:
            raise ConfigError("--arch and --study exclude each other")
        from nas.search import export_trials

        t0 = time.perf_counter()
        dirs = export_trials(study, storage, out, trial, pareto,
                             checkpoint=str(checkpoint) if checkpoint else None,
                             overwrite=overwrite, progress=not json_out)
        if json_out:
            print_json({"out": [str(d) for d in dirs],
                        "seconds": round(time.perf_counter() - t0, 3)})
            return
        for d in dirs:
            console.print(f"exported {d}/ (verified)")
        return
    missing = [n for n, v in (("--space", space), ("--checkpoint", checkpoint),
                              ("--arch", arch)) if v is None]
    if missing:
        raise ConfigError(f"missing {', '.join(missing)} (or export a search's subnets with "
                          "--study NAME --trial N | --pareto)")
    from nas.supernet import load_supernet

    t0 = time.perf_counter()
    net = load_supernet(checkpoint, space=space)  # type: ignore[arg-type]
    res = export_subnet(net, arch, out, opset=opset, overwrite=overwrite,  # type: ignore[arg-type]
                        checkpoint=checkpoint)
    m = res.manifest
    if json_out:
        print_json({"out": str(out), "seconds": round(time.perf_counter() - t0, 3), **m})
        return
    console.print(
        f"exported {m['space']}:{m['arch_hash']} r={m['resolution']} "
        f"({m['macs'] / 1e6:.1f}M MACs, {m['params'] / 1e6:.2f}M params) to {out}/  "
        f"verified: max |onnx - torch| = {m['verification']['max_abs_diff']:.2e}"
    )


def verify_cmd(
    folder: Annotated[Path, typer.Argument(help="Export folder (with manifest.json).")],
    json_out: JsonOpt = False,
) -> None:
    """Re-verify an export folder: file hashes, ONNX checker, ONNX Runtime against torch."""
    from nas.export import verify_export

    res = verify_export(folder)
    if json_out:
        print_json(res)
    else:
        console.print(f"{folder}: OK ({res['space']}:{res['arch_hash']}, max |onnx - torch| = "
                      f"{res['max_abs_diff']:.2e})")


def demo_cmd(
    workdir: Annotated[Path, typer.Option(help="Where the demo writes its files (a rerun "
                                          "reuses its measurements).")] = Path("runs/demo"),
    checkpoint: Annotated[Path | None, typer.Option(
        help="Supernet checkpoint (default: the shipped tiny supernet trained on digits).")
    ] = None,
    data: Annotated[str, typer.Option(help="Data for the accuracy proxy.")] = "digits",
    device: Annotated[str, typer.Option(help="Device profile to measure and search for.")
                      ] = "cpu-1t",
    n_latency: Annotated[int, typer.Option(
        "--n-latency", min=4, help="Subnets to measure for the latency predictor.")] = 40,
    n_trials: Annotated[int, typer.Option("--n-trials", min=1, help="Search budget.")] = 60,
    workers: Annotated[int, typer.Option(min=1, help="Ray actors of the search.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of the samples and the sampler.")] = 0,
    json_out: JsonOpt = False,
) -> None:
    """The main job on the embedded default, end to end, with a summary.

    Measures a sample of the shipped supernet's subnets on the device in ONNX Runtime, fits
    a latency predictor, runs a constrained accuracy/latency search on a local Ray (budget:
    the median subnet's predicted latency), exports and verifies the chosen subnet, and
    checks its predicted latency against a measurement.
    """
    from nas.demo import run_demo

    summary = run_demo(workdir=workdir, checkpoint=checkpoint, data=data, device=device,
                       n_latency=n_latency, n_trials=n_trials, workers=workers, seed=seed,
                       progress=not json_out)
    if json_out:
        print_json(summary)


def _version(value: bool) -> None:
    if value:
        import nas

        print(f"nas {nas.__version__}")
        raise typer.Exit()


def register(app: typer.Typer) -> None:
    @app.callback()
    def _root(
        version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                              help="Print the version and exit.")] = False,
    ) -> None:
        """Hardware-aware neural architecture search on once-for-all supernets."""

    app.add_typer(spaces_app, name="spaces")
    app.add_typer(arch_app, name="arch")
    app.add_typer(supernet_app, name="supernet")
    app.command("export")(export_cmd)
    app.command("verify")(verify_cmd)
    app.command("demo")(demo_cmd)
