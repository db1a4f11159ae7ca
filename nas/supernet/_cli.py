"""``nas supernet ...``: create, inspect and convert supernet checkpoints."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from nas._cli_utils import JsonOpt, OverwriteOpt, SpaceOpt, console, print_json, seed_option
from nas._outputs import check_output

__all__ = ["register"]

supernet_app = typer.Typer(help="Create, inspect and convert supernet checkpoints (OFA's too).",
                           no_args_is_help=True)


@supernet_app.command("init")
def supernet_init(
    space: SpaceOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Checkpoint file to write "
                                      "(.safetensors).")],
    seed: Annotated[int, seed_option("Random seed of the initialisation")] = 0,
    calibrate: Annotated[bool, typer.Option(help="Set BatchNorm statistics from random inputs "
                                            "so eval outputs are of order 1.")] = True,
    overwrite: OverwriteOpt = False,
) -> None:
    """Write a randomly initialised supernet checkpoint (an existing one needs --overwrite)."""
    check_output(out, overwrite=overwrite, example="supernet.safetensors")
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
    """Show a checkpoint's space (a GPT supernet's geometry) and metadata."""
    from nas.errors import CheckpointError
    from nas.supernet import read_checkpoint_meta, read_gpt_checkpoint_meta

    try:
        meta = read_gpt_checkpoint_meta(checkpoint)
    except CheckpointError:  # not a GPT supernet's: the OFA reader says what it is
        meta = read_checkpoint_meta(checkpoint)
    else:
        if json_out:
            print_json(meta)
        else:
            console.print(f"{checkpoint}: GPT supernet {json.dumps(meta['geometry'])}, "
                          f"{meta.get('dtype', '?')}, format {meta['format']} "
                          f"v{meta.get('version', '?')}, {json.dumps(meta['extra'])}")
        return
    if json_out:
        print_json(meta)
    else:
        console.print(f"{checkpoint}: space {meta['space']}, format {meta['format']} "
                      f"v{meta['version']}, {json.dumps(meta['extra'])}")


_OFA_HELP = ("ofa_mbv3 (OFAMobileNetV3, width 1.0), ofa_mbv3_w12 (width 1.2) or ofa_proxyless "
             "(OFAProxylessNASNets, width 1.3)")


def supernet_import_ofa(
    ofa_file: Annotated[Path, typer.Argument(
        metavar="OFA_FILE", help="Once-for-All supernet checkpoint: torch.save of the "
        "state_dict of OFA's network, bare or under 'state_dict' (e.g. "
        "ofa_mbv3_d234_e346_k357_w1.0).")],
    space: Annotated[str, typer.Option("--space", "-s", help=f"The space it belongs to: "
                                       f"{_OFA_HELP}.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Checkpoint file to write "
                                      "(.safetensors).")],
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Convert a Once-for-All supernet checkpoint into ours (.safetensors).

    The file is read with torch.load(weights_only=True): tensors only, never Python objects (a
    pickle that names any is refused unread). Every OFA tensor (weights, BatchNorm statistics,
    squeeze-excite, kernel-transform matrices, classifier) is matched to ours by name and
    shape; a file of another space, or with missing or extra tensors, is refused in one line
    and nothing is written. The checkpoint's metadata records the source file's name and
    sha256. Subnets extracted from the result give OFA's get_active_subnet logits.
    """
    check_output(out, inputs=[("OFA_FILE", ofa_file)], overwrite=overwrite,
                 example="ofa_mbv3.safetensors")
    from nas.supernet import import_ofa_checkpoint, save_supernet

    net = import_ofa_checkpoint(ofa_file, space)
    meta: dict[str, Any] = dict(getattr(net, "checkpoint_meta", {}))
    path = save_supernet(net, out, meta=meta)
    n_tensors = len(net.state_dict())
    n_params = sum(p.numel() for p in net.parameters())
    if json_out:
        print_json({"checkpoint": str(path), "space": net.space.name, **meta,
                    "tensors": n_tensors, "parameters": n_params})
    else:
        console.print(f"converted {ofa_file} ({meta['ofa_class']} width "
                      f"{meta['ofa_width_mult']}, sha256 {meta['ofa_sha256'][:12]}...) to {path} "
                      f"(space {net.space.name}, {n_tensors} tensors, "
                      f"{n_params / 1e6:.2f}M parameters)")


def supernet_export_ofa(
    checkpoint: Annotated[Path, typer.Argument(help="Our supernet checkpoint (.safetensors) "
                                               f"of {_OFA_HELP}.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="File to write (.pth).")],
    wrap: Annotated[bool | None, typer.Option(
        "--wrap/--no-wrap", help="Write {'state_dict': ...} as OFA publishes them, or the bare "
        "state_dict. Default: as the OFA file it was converted from, else wrapped.",
        show_default=False)] = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Write a supernet checkpoint as Once-for-All's (torch.save of OFA's state_dict).

    OFA's own network loads it with load_state_dict(torch.load(f)["state_dict"]):
    OFAMobileNetV3(width_mult=1.0, ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6],
    depth_list=[2, 3, 4]) for ofa_mbv3, width_mult=1.2 for ofa_mbv3_w12, and
    OFAProxylessNASNets(width_mult=1.3, ...) for ofa_proxyless. A checkpoint converted from
    OFA comes back exactly: the same names, order, tensors and serialization.
    """
    check_output(out, inputs=[("CHECKPOINT", checkpoint)], overwrite=overwrite,
                 example="ofa_mbv3.pth")
    from nas.supernet import export_ofa_checkpoint, load_supernet, ofa_state_dict

    net = load_supernet(checkpoint)
    path = export_ofa_checkpoint(net, out, wrap=wrap)
    n = len(ofa_state_dict(net))
    if json_out:
        print_json({"file": str(path), "space": net.space.name, "tensors": n,
                    "source": (net.checkpoint_meta or {}).get("source")})
    else:
        console.print(f"wrote {path} ({n} tensors of OFA's {net.space.name} supernet)")


def supernet_import_hf(
    folder: Annotated[Path, typer.Argument(
        metavar="FOLDER", help="What transformers' GPT2LMHeadModel.save_pretrained wrote: "
        "config.json with model.safetensors or pytorch_model.bin.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Checkpoint file to write "
                                      "(.safetensors).")],
    dtype: Annotated[str, typer.Option(help="Weights as float16 (half the size) or "
                                       "float32.")] = "float16",
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Convert a Hugging Face GPT-2 checkpoint into a GPT supernet checkpoint (.safetensors).

    The supernet's largest subnet is the model (logits within 1e-5 in float32); smaller
    subnets keep prefixes of its channels, heads and MLP neurons. pytorch_model.bin is read
    with torch.load(weights_only=True): a pickle that names any Python object is refused
    unread. A config this layout does not reproduce (cross-attention, attention scaled by
    layer, another activation, an untied LM head) is refused in one line and nothing is
    written.
    """
    check_output(out, inputs=[("FOLDER", folder)], overwrite=overwrite,
                 example="gpt2.safetensors")
    from nas.errors import ConfigError
    from nas.supernet import import_hf_gpt2, save_gpt_supernet

    if dtype not in ("float16", "float32"):
        raise ConfigError(f"--dtype must be float16 or float32, got {dtype!r}")
    net, meta = import_hf_gpt2(folder)
    path = save_gpt_supernet(net, out, meta=meta, dtype=dtype)
    n_params = sum(p.numel() for p in net.parameters())
    if json_out:
        print_json({"checkpoint": str(path), "family": "gpt", "geometry": net.geometry,
                    "dtype": dtype, **meta, "parameters": n_params})
    else:
        g = net.geometry
        console.print(f"converted {folder} ({meta['hf_file']}, sha256 {meta['hf_sha256'][:12]}"
                      f"...) to {path} (GPT: {g['n_layer']} layers, {g['n_embd']} wide, "
                      f"{g['n_head']} heads, MLP {g['mlp']}, {n_params / 1e6:.2f}M parameters, "
                      f"{dtype})")


def supernet_export_hf(
    checkpoint: Annotated[Path, typer.Argument(help="GPT supernet checkpoint (.safetensors), "
                                               "as `nas supernet import-hf` writes.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write (new or empty).")],
    arch: Annotated[str | None, typer.Option(
        "--arch", "-a", help='Subnet as JSON text \'{"n_layer": 2, "n_embd": 32, "n_head": '
        '[4, 4], "mlp": [128, 128]}\' or @file.json; default the largest.')] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Write a GPT subnet as a folder transformers' GPT2LMHeadModel.from_pretrained loads.

    Every layer must have the same heads and MLP width, and heads times head size must equal
    the embedding width (GPT-2's config says each once); otherwise one line names the layer.
    """
    check_output(out, inputs=[("CHECKPOINT", checkpoint)], overwrite=overwrite, folder=True,
                 example="gpt2-small/")
    from nas._io import read_text
    from nas.errors import ArchitectureError
    from nas.supernet import export_hf_gpt2, load_gpt_supernet

    parsed: Any = None
    if arch is not None:
        text = read_text(arch[1:], "--arch file", error=ArchitectureError) \
            if arch.startswith("@") else arch
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ArchitectureError(f"--arch is not valid JSON ({exc})") from None
    net = load_gpt_supernet(checkpoint)
    chosen = net.check_arch(parsed) if parsed is not None else net.largest()
    path = export_hf_gpt2(net, chosen, out)
    console.print(f"wrote {path} (GPT2LMHeadModel: {chosen['n_layer']} layers, "
                  f"{chosen['n_embd']} wide, {chosen['n_head'][0]} heads, "
                  f"MLP {chosen['mlp'][0]})")


def supernet_subclone(
    checkpoint: Annotated[Path, typer.Argument(help="GPT supernet checkpoint (.safetensors).")],
    calibration: Annotated[Path, typer.Option(
        "--calibration", "-c", help="Token ids of text the subnets are for, as a NumPy .npy "
        "file of integers: (batch, seq), or 1-D (cut into windows of the model's context).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Checkpoint file to write "
                                      "(.safetensors).")],
    rank_blocks: Annotated[bool, typer.Option(
        "--rank-blocks/--keep-block-order", help="Rank the blocks a depth keeps by importance, "
        "or keep the checkpoint's ranking: the one its space states, which `nas export` "
        "checks the checkpoint against.")] = True,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Reorder a GPT supernet by importance (weight subcloning, Samragh et al., 2023).

    Embedding channels, each block's heads and MLP neurons are ranked on the calibration
    tokens and put in descending order, so every subnet (a prefix of each) keeps the most
    important ones; the blocks are ranked by how much the output changes without each, the
    first and last first, and a shallower subnet keeps the top of that ranking. The largest
    subnet computes the same logits as before. The checkpoint is written in the input's
    precision, with the ranking and the calibration file's sha256 in its metadata.
    """
    check_output(out, inputs=[("CHECKPOINT", checkpoint), ("--calibration", calibration)],
                 overwrite=overwrite, example="reordered.safetensors")
    import hashlib
    import io

    import numpy as np
    import torch

    from nas._io import read_bytes
    from nas.errors import DataError
    from nas.supernet import (
        load_gpt_supernet,
        read_gpt_checkpoint_meta,
        reorder_by_importance,
        save_gpt_supernet,
    )

    meta = read_gpt_checkpoint_meta(checkpoint)
    data = read_bytes(calibration, "--calibration file", error=DataError)
    try:
        ids = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"--calibration {calibration} is not a NumPy .npy file of token ids "
                        f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                        ) from None
    if not isinstance(ids, np.ndarray) or ids.dtype.kind not in "iu":
        kind = ids.dtype if isinstance(ids, np.ndarray) else type(ids).__name__
        raise DataError(f"--calibration {calibration} must hold integer token ids, got {kind}")
    net = load_gpt_supernet(checkpoint)
    if ids.ndim == 1:  # a stream of tokens: windows of the model's context
        ctx = min(net.geometry["n_ctx"], max(len(ids), 1))
        ids = ids[: len(ids) // ctx * ctx].reshape(-1, ctx)
    try:
        importance = reorder_by_importance(net, torch.from_numpy(ids.astype(np.int64)),
                                           rank_blocks=rank_blocks)
    except DataError as exc:  # said of the file, not of the function's argument
        raise DataError(f"--calibration {calibration} "
                        f"{str(exc).removeprefix('calibration_ids ')}") from None
    extra = {**net.checkpoint_meta,
             "subcloned": {"calibration": calibration.name,
                           "calibration_sha256": hashlib.sha256(data).hexdigest(),
                           "calibration_tokens": int(ids.size),
                           "block_order": importance.block_order,
                           "block_order_applied": rank_blocks}}
    dtype = str(meta.get("dtype")) if meta.get("dtype") in ("float16", "float32") else "float32"
    path = save_gpt_supernet(net, out, meta=extra, dtype=dtype)
    if json_out:
        print_json({"checkpoint": str(path), "block_order": net.geometry["block_order"],
                    "blocks_kl": importance.blocks.tolist(),
                    "calibration_tokens": int(ids.size), "dtype": dtype})
    else:
        kept = "ranked" if rank_blocks else "kept as they were; measured"
        console.print(f"wrote {path}: channels, heads and neurons in order of importance on "
                      f"{ids.size} tokens; blocks {kept} {importance.block_order} (most "
                      f"important first)")


def _help(doc: str | None) -> str:
    """A docstring as help text: paragraphs kept, the lines inside each joined."""
    paragraphs = [" ".join(line.strip() for line in p.splitlines())
                  for p in inspect.cleandoc(doc or "").split("\n\n")]
    return "\n\n".join(p for p in paragraphs if p)


supernet_app.command("import-ofa", help=_help(supernet_import_ofa.__doc__))(supernet_import_ofa)
supernet_app.command("export-ofa", help=_help(supernet_export_ofa.__doc__))(supernet_export_ofa)
supernet_app.command("import-hf", help=_help(supernet_import_hf.__doc__))(supernet_import_hf)
supernet_app.command("export-hf", help=_help(supernet_export_hf.__doc__))(supernet_export_hf)
supernet_app.command("subclone", help=_help(supernet_subclone.__doc__))(supernet_subclone)


def register(app: typer.Typer) -> None:
    """Add ``nas supernet`` to the root app."""
    app.add_typer(supernet_app, name="supernet")
