"""``nas spaces ...`` and ``nas arch ...``: list, inspect and sample search spaces."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from nas._cli_utils import (
    MAX_ARCHS,
    ArchOpt,
    JsonOpt,
    OverwriteOpt,
    SpaceOpt,
    console,
    print_json,
    seed_option,
)
from nas._outputs import check_output
from nas.errors import ConfigError

if TYPE_CHECKING:
    from nas.space import FamilySpace, GPTSpace

__all__ = ["register"]

spaces_app = typer.Typer(help="List, inspect and sample search spaces.", no_args_is_help=True)
arch_app = typer.Typer(help="Inspect architectures.", no_args_is_help=True)


def _fmt_count(n: int) -> str:
    return f"{n:.3e}" if n >= 10**6 else str(n)


def _arch_row(space: FamilySpace, arch: Any) -> dict[str, Any]:
    c = space.costs([arch])
    row = {"hash": arch.hash, "arch": arch.to_dict(), "macs": int(c["macs"][0]),
           "params": int(c["params"][0])}
    if space.family == "gpt":  # MACs per token at the space's context
        row["context"] = space.spec.n_ctx
    return row


def _gpt(space: FamilySpace) -> GPTSpace | None:
    from nas.space import GPTSpace

    return space if isinstance(space, GPTSpace) else None


# ---------------------------------------------------------------------- spaces
@spaces_app.command("list")
def spaces_list(json_out: JsonOpt = False) -> None:
    """List the registered search spaces."""
    from nas.space import get_family_space, list_spaces

    rows: list[dict[str, Any]] = []
    for name in list_spaces():
        sp = get_family_space(name)
        row = {"name": name, "description": sp.description, "tags": sorted(sp.tags),
               "family": sp.family, "architectures": sp.size()}
        gpt = _gpt(sp)
        if gpt is None:
            row["resolutions"] = list(getattr(sp, "resolutions", []))
        else:
            row["context"] = gpt.n_ctx
        rows.append(row)
    if json_out:
        print_json(rows)
        return
    table = Table("space", "architectures", "resolutions", "description")
    for r in rows:
        res = r.get("resolutions")
        table.add_row(r["name"], _fmt_count(r["architectures"]),
                      f"{res[0]}..{res[-1]} ({len(res)})" if res else f"context {r['context']}",
                      r["description"])
    console.print(table)


@spaces_app.command("show")
def spaces_show(name: Annotated[str, typer.Argument(help="Space name.")],
                json_out: JsonOpt = False) -> None:
    """Show a space: its stages (or layers), choices, and how many architectures it holds."""
    from nas.space import get_family_space, get_space

    gpt = _gpt(get_family_space(name))
    if gpt is not None:
        _show_gpt(gpt, json_out)
        return
    sp = get_space(name)
    info: dict[str, Any] = {
        "name": sp.name, "description": sp.description, "tags": sorted(sp.tags),
        "family": sp.family, "architectures": sp.size(),
        "architectures_times_resolutions": sp.size(True),
        "n_stages": sp.n_stages, "max_depth": sp.max_depth, "n_layer_slots": sp.n_layers,
        "kernel_sizes": list(sp.kernel_sizes), "expand_ratios": list(sp.expand_ratios),
        "depths": list(sp.depths), "resolutions": list(sp.resolutions),
        "spec": sp.spec.model_dump(),
        "largest": _arch_row(sp, sp.largest()), "smallest": _arch_row(sp, sp.smallest()),
    }
    if json_out:
        print_json(info)
        return
    console.print(f"[bold]{sp.name}[/bold]: {sp.description}")
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
                      "yes" if st.se else "-",
                      f"{st.depth} (fixed)" if st.depth else "/".join(map(str, sp.depths)))
    h = s.head
    widths = (f"{h.feature_mix} (before pooling) -> {s.num_classes}" if h.final_expand is None
              else f"{h.final_expand} -> {h.feature_mix} -> {s.num_classes}")
    table.add_row("head", widths, "", h.act, "", "")
    console.print(table)
    for label, key in (("largest", "largest"), ("smallest", "smallest")):
        row = info[key]
        console.print(f"{label}: {row['macs'] / 1e6:.1f}M MACs, {row['params'] / 1e6:.2f}M params")


def _show_gpt(sp: GPTSpace, json_out: bool) -> None:
    from nas.space import kept_blocks

    s = sp.spec
    info: dict[str, Any] = {
        "name": sp.name, "description": sp.description, "tags": sorted(sp.tags),
        "family": sp.family, "architectures": sp.size(), "vocab_size": s.vocab_size,
        "context": s.n_ctx, "head_dim": s.head_dim, "n_layer": list(s.n_layer),
        "n_embd": list(s.n_embd), "n_head": list(s.n_head), "mlp": list(s.mlp),
        "kept_blocks": {str(n): kept_blocks(sp, n) for n in s.n_layer},
        "spec": s.model_dump(),
        "largest": _arch_row(sp, sp.largest()), "smallest": _arch_row(sp, sp.smallest()),
    }
    if json_out:
        print_json(info)
        return
    console.print(f"[bold]{sp.name}[/bold]: {sp.description}")
    console.print(f"{_fmt_count(sp.size())} distinct architectures; vocabulary "
                  f"{s.vocab_size}, context {s.n_ctx}, heads of {s.head_dim}")
    table = Table("dimension", "choices")
    table.add_row("layers", " ".join(map(str, s.n_layer)))
    table.add_row("width (n_embd)", " ".join(map(str, s.n_embd)))
    table.add_row("heads per layer", " ".join(map(str, s.n_head)))
    table.add_row("MLP per layer", " ".join(map(str, s.mlp)))
    console.print(table)
    smallest_depth = min(s.n_layer)
    console.print(f"a depth of {smallest_depth} keeps blocks "
                  f"{kept_blocks(sp, smallest_depth)} of {sp.max_layer}")
    for label in ("largest", "smallest"):
        row = info[label]
        console.print(f"{label}: {row['macs'] / 1e6:.1f}M MACs per token at context "
                      f"{s.n_ctx}, {row['params'] / 1e6:.2f}M params")


@spaces_app.command("sample")
def spaces_sample(
    name: Annotated[str, typer.Argument(help="Space name.")],
    n: Annotated[int, typer.Option("--n", "-n", min=1, max=MAX_ARCHS,
                                   help="How many architectures.")] = 1,
    seed: Annotated[int, seed_option("Random seed: same seed, same sample")] = 0,
    largest: Annotated[bool, typer.Option("--largest", help="The largest subnet.")] = False,
    smallest: Annotated[bool, typer.Option("--smallest", help="The smallest subnet.")] = False,
    json_out: JsonOpt = False,
    jsonl: Annotated[bool, typer.Option("--jsonl", help="One bare arch per line (an "
                                        "--arch-file for other commands).")] = False,
) -> None:
    """Sample architectures (distinct, uniform per choice), or the largest/smallest."""
    from nas.space import get_family_space

    sp = get_family_space(name)
    if largest and smallest:
        raise ConfigError("--largest and --smallest: give one of them, not both")
    archs = [sp.largest()] if largest else [sp.smallest()] if smallest else sp.sample_many(n, seed)
    if jsonl:
        for a in archs:
            print(a.to_json())
        return
    rows = [_arch_row(sp, a) for a in archs]
    if json_out:
        print_json(rows)
        return
    if _gpt(sp) is not None:
        table = Table("hash", "layers", "width", "MACs/token (M)", "params (M)", "arch")
        for a, r in zip(archs, rows, strict=True):
            table.add_row(a.hash, str(a.n_layer), str(a.n_embd), f"{r['macs'] / 1e6:.1f}",
                          f"{r['params'] / 1e6:.2f}", a.to_json())
        console.print(table)
        return
    table = Table("hash", "r", "d", "MACs (M)", "params (M)", "arch")
    for a, r in zip(archs, rows, strict=True):
        table.add_row(a.hash, str(a.r), "".join(map(str, a.d)), f"{r['macs'] / 1e6:.1f}",
                      f"{r['params'] / 1e6:.2f}", a.to_json())
    console.print(table)


# ---------------------------------------------------------------------- arch
@arch_app.command("info")
def arch_info(
    space: SpaceOpt, arch: ArchOpt,
    context: Annotated[int | None, typer.Option(
        "--context", help="gpt spaces: count MACs per token, and the KV cache's memory, at "
        "this many positions (default the space's context; at most that).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Canonical form, hash, MACs and parameters of an architecture (no model is built); for
    a gpt space also its memory: weights and KV cache at the context (float32, batch 1)."""
    from nas.space import get_family_space, get_space

    gpt = _gpt(get_family_space(space))
    if gpt is not None:
        _gpt_arch_info(gpt, arch, context, json_out)
        return
    if context is not None:
        raise ConfigError(f"--context = {context}: applies to spaces of the gpt family; "
                          f"{space} is of the {get_family_space(space).family} family")
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
    for s, depth in enumerate(sp.stage_depths(a)):
        sl = slice(s * sp.max_depth, s * sp.max_depth + depth)
        table.add_row(str(s + 1), str(depth), " ".join(map(str, a.ks[sl])),
                      " ".join(map(str, a.e[sl])), f"{info['stage_macs'][s] / 1e6:.2f}",
                      f"{info['stage_params'][s] / 1e3:.1f}")
    console.print(table)
    console.print(f"canonical: {a.to_json()}")




def _gpt_arch_info(sp: GPTSpace, arch: str, context: int | None, json_out: bool) -> None:
    a = sp.parse(arch)
    ctx = sp.context(context)
    c = sp.costs([a], ctx)
    m = sp.memory([a], ctx)
    blocks = sp.kept_blocks(a)
    info: dict[str, Any] = {
        "space": sp.name, "hash": a.hash, "arch": a.to_dict(), "context": ctx,
        "macs": int(c["macs"][0]), "params": int(c["params"][0]), "kept_blocks": blocks,
        "layer_macs": [int(v) for v in c["layer_macs"][0][:a.n_layer]],
        "layer_params": [int(v) for v in c["layer_params"][0][:a.n_layer]],
        "memory": {"unit": "bytes", "context": ctx, "batch": 1, "dtype": "float32",
                   "weights": int(m["weights"][0]), "cache": int(m["cache"][0]),
                   "total": int(m["total"][0]),
                   "layer_cache": [int(v) for v in m["layer_cache"][0][:a.n_layer]]}}
    if json_out:
        print_json(info)
        return
    mem, mib = info["memory"], 2.0 ** 20
    console.print(f"[bold]{sp.name}[/bold] arch {a.hash}  {a.n_layer} layers x {a.n_embd}  "
                  f"{info['macs'] / 1e6:.2f}M MACs per token at context {ctx}  "
                  f"{info['params'] / 1e6:.3f}M params")
    console.print(f"memory at context {ctx} (float32, batch 1): weights "
                  f"{mem['weights'] / mib:.4g} MiB + KV cache {mem['cache'] / mib:.4g} MiB = "
                  f"{mem['total'] / mib:.4g} MiB ({mem['total']:,} bytes)")
    table = Table("layer", "block", "heads", "attention width", "MLP", "MACs (M)",
                  "params (K)", "KV cache (KiB)")
    for i in range(a.n_layer):
        table.add_row(str(i + 1), str(blocks[i]), str(a.n_head[i]),
                      str(a.n_head[i] * sp.head_dim), str(a.mlp[i]),
                      f"{info['layer_macs'][i] / 1e6:.2f}", f"{info['layer_params'][i] / 1e3:.1f}",
                      f"{mem['layer_cache'][i] / 1024:.1f}")
    console.print(table)
    console.print(f"canonical: {a.to_json()}")


@arch_app.command("from-ofa")
def arch_from_ofa(
    path: Annotated[Path, typer.Argument(help="A published OFA subnet: a folder with net.config "
                                         "and run.config (OFA's ofa_specialized/<name>/).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the architecture as "
                                             "JSON to this file (for --arch @FILE).")] = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Convert a subnet Once-for-All specialized (net.config + run.config) into an architecture.

    MobileNetV3 configs convert to ofa_mbv3 (w1.0) or ofa_mbv3_w12 (w1.2), ProxylessNAS ones
    to ofa_proxyless (w1.3; other widths are refused). A resolution off the space's search
    grid is kept: it is the size the subnet was fine-tuned at.
    """
    from nas._io import atomic_write
    from nas.space import get_space, read_ofa_subnet

    if out is not None:
        check_output(out, inputs=[("PATH", path)], overwrite=overwrite, example="arch.json")
    a = read_ofa_subnet(path)
    sp = get_space(a.space)
    row = {"space": sp.name, **_arch_row(sp, a), "on_grid": a.r in sp.resolutions}
    if out is not None:
        atomic_write(out, a.to_json() + "\n")
    if json_out:
        print_json(row)
        return
    grid = "" if row["on_grid"] else " (off the search grid: a deployment resolution)"
    console.print(f"[bold]{sp.name}[/bold] arch {a.hash}  r={a.r}{grid}  "
                  f"{row['macs'] / 1e6:.1f}M MACs  {row['params'] / 1e6:.3f}M params")
    console.print(a.to_json() if out is None else f"written to {out}")


def register(app: typer.Typer) -> None:
    """Add ``nas spaces`` and ``nas arch`` to the root app."""
    app.add_typer(spaces_app, name="spaces")
    app.add_typer(arch_app, name="arch")
