"""``nas export`` and ``nas verify``: write and re-check export folders."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Protocol

import typer

from nas._cli_utils import JsonOpt, StorageOpt, console, print_json, study_option
from nas._outputs import check_apart, check_output, storage_file
from nas.errors import ConfigError, NASError

__all__ = ["TrialExporter", "register"]


class TrialExporter(Protocol):
    """``nas.search.export_trials``: a search's subnets to verified export folders."""

    def __call__(self, study: str, storage: str | None, out_dir: Path | str,
                 trials: list[int] | None = None, pareto: bool = False, *,
                 checkpoint: str | None = None, overwrite: bool = False,
                 progress: bool = True) -> list[Path]: ...


def export_cmd(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write (must be empty or "
                                      "missing, unless --overwrite); with --study, the folder "
                                      "that receives one trial-NNNN-<hash>/ per subnet.")],
    space: Annotated[str | None, typer.Option(
        "--space", "-s", help="Search space name (`nas spaces list`).")] = None,
    checkpoint: Annotated[Path | None, typer.Option(
        "--checkpoint", "-c", help="Supernet checkpoint (with --study: default the search's).")
    ] = None,
    arch: Annotated[str | None, typer.Option(
        "--arch", "-a", help='Architecture in its space\'s format: JSON text (OFA: \'{"ks": '
        '[...], "e": [...], "d": [...], "r": 224}\'; gpt: \'{"n_layer": 2, "n_embd": 32, '
        '"n_head": [...], "mlp": [...]}\') or @file.json.')] = None,
    study: Annotated[str | None, study_option("to export subnets of (with --trial or "
                                              "--pareto)")] = None,
    storage: StorageOpt = None,
    trial: Annotated[list[int] | None, typer.Option(
        "--trial", "-t", help="Trial number of the search to export (repeat).")] = None,
    pareto: Annotated[bool, typer.Option(help="Export the search's whole Pareto front (or its "
                                         "best subnet).")] = False,
    opset: Annotated[int, typer.Option(min=17, help="ONNX opset (17 or newer).")] = 17,
    overwrite: Annotated[bool, typer.Option(help="Replace --out if it is an export folder "
                                            "(other files in it are refused, not deleted).")
                         ] = False,
    prompt: Annotated[str | None, typer.Option(
        "--prompt", help="gpt spaces: the verification's prompt, text for a byte-level "
        "tokenizer ('ROMEO:'), or token ids as ids:1,2,3 (text:... for a text that starts "
        "with 'ids:'); default a few tokens.")] = None,
    new_tokens: Annotated[int | None, typer.Option(
        "--new-tokens", help="gpt spaces: tokens the verification generates greedily "
        "(default 32, fewer where the context is shorter).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Export a subnet: model.onnx + weights.safetensors + manifest.json, verified.

    Either one architecture (--space, --checkpoint, --arch) or subnets of a search (--study
    with --trial N or --pareto; weights inherited, BatchNorm recalibrated on the search's
    data, the manifest carrying the search's predictions and measurements). Runs
    onnx.checker and compares ONNX Runtime's output with torch's on random input (max abs
    diff 1e-5 of the logits' scale, at least 1e-4; the manifest states the bound); on
    failure nothing is written. --overwrite replaces an export folder only. A space of the
    gpt family exports a graph for generation (prefill and decoding with a KV cache),
    verified by 32 greedy tokens identical in torch and ONNX Runtime (docs/gpt_export.md).
    """
    generation = [n for n, v in (("--prompt", prompt), ("--new-tokens", new_tokens))
                  if v is not None]
    if study is not None:
        if arch is not None:
            raise ConfigError("--arch and --study exclude each other")
        if generation:
            raise ConfigError(f"{' and '.join(generation)} are for one subnet of a gpt space "
                              "(--space, --checkpoint, --arch), not for --study")
        # one trial-NNNN-<hash>/ per subnet goes into --out: it is never replaced whole
        check_apart(out, "--out", [("--checkpoint", checkpoint),
                                   ("--storage", storage_file(storage))])
        # The search sits above export: `nas.cli` hands its exporter to the commands below it.
        exporter: TrialExporter = ctx.obj.export_trials
        _export_study(exporter, study, storage, out, trial, pareto, checkpoint=checkpoint,
                      overwrite=overwrite, json_out=json_out)
        return
    if space is None or checkpoint is None or arch is None:
        missing = [n for n, v in (("--space", space), ("--checkpoint", checkpoint),
                                  ("--arch", arch)) if v is None]
        raise ConfigError(f"missing {', '.join(missing)} (or export a search's subnets with "
                          "--study NAME --trial N | --pareto)")
    # what an existing --out may hold (an export's files only) is export_subnet's rule
    check_output(out, inputs=[("--checkpoint", checkpoint)], overwrite=True, folder=True)
    _export_arch(space, checkpoint, arch, out, opset=opset, overwrite=overwrite,
                 json_out=json_out, prompt=prompt, new_tokens=new_tokens)


def _export_study(exporter: TrialExporter, study: str, storage: str | None, out: Path,
                  trials: list[int] | None, pareto: bool, *, checkpoint: Path | None,
                  overwrite: bool, json_out: bool) -> None:
    """``nas export --study``: a search's subnets, one verified folder each."""
    t0 = time.perf_counter()
    dirs = exporter(study, storage, out, trials, pareto,
                    checkpoint=str(checkpoint) if checkpoint else None,
                    overwrite=overwrite, progress=not json_out)
    if json_out:
        print_json({"out": [str(d) for d in dirs],
                    "seconds": round(time.perf_counter() - t0, 3)})
        return
    for d in dirs:
        console.print(f"exported {d}/ (verified)")


def _parse_prompt(text: str) -> str | list[int]:
    """``--prompt``: ``ids:1,2,3`` is token ids, ``text:...`` the text after the prefix,
    anything else text (the export refuses text where the tokenizer is not byte-level)."""
    if text.startswith("text:"):
        return text[len("text:"):]
    if not text.startswith("ids:"):
        return text
    ids = []
    for part in text[len("ids:"):].split(","):
        part = part.strip()
        if not part.isdigit() or not part.isascii():
            raise ConfigError(f"--prompt {text[:60]!r}: token ids are non-negative integers "
                              f"separated by commas (ids:1,2,3), got {part[:20]!r}")
        ids.append(int(part))
    return ids


def _export_arch(space: str, checkpoint: Path, arch: str, out: Path, *, opset: int,
                 overwrite: bool, json_out: bool, prompt: str | None = None,
                 new_tokens: int | None = None) -> None:
    """``nas export --space --checkpoint --arch``: one architecture of a supernet."""
    from nas.export import export_subnet
    from nas.space import get_family_space
    from nas.supernet import load_supernet

    try:
        family = get_family_space(space).family
    except NASError:  # an unknown space: the OFA path's own error, as before
        family = None
    if family == "gpt":
        _export_gpt_arch(space, checkpoint, arch, out, opset=opset, overwrite=overwrite,
                         json_out=json_out, prompt=prompt, new_tokens=new_tokens)
        return
    generation = [n for n, v in (("--prompt", prompt), ("--new-tokens", new_tokens))
                  if v is not None]
    if family is not None and generation:
        raise ConfigError(f"{' and '.join(generation)}: space {space} is of the {family!r} "
                          "family; a verification prompt is for spaces of the 'gpt' family "
                          "(generation)")
    t0 = time.perf_counter()
    net = load_supernet(checkpoint, space=space)
    res = export_subnet(net, arch, out, opset=opset, overwrite=overwrite,
                        checkpoint=checkpoint)
    m = res.manifest
    if json_out:
        print_json({"out": str(out), "seconds": round(time.perf_counter() - t0, 3), **m})
        return
    console.print(
        f"exported {m['space']}:{m['arch_hash']} r={m['resolution']} "
        f"({m['macs'] / 1e6:.1f}M MACs, {m['params'] / 1e6:.2f}M params) to {out}/  "
        f"verified: max |onnx - torch| = {m['verification']['max_abs_diff']:.2e} "
        f"(allowed {m['verification']['allowed']:.2e})"
    )


def _export_gpt_arch(space: str, checkpoint: Path, arch: str, out: Path, *, opset: int,
                     overwrite: bool, json_out: bool, prompt: str | None,
                     new_tokens: int | None) -> None:
    """``nas export`` of a ``gpt`` space's architecture: a graph for generation."""
    from nas.export import export_gpt_subnet
    from nas.supernet import load_gpt_supernet

    ids = _parse_prompt(prompt) if prompt is not None else None
    t0 = time.perf_counter()
    net = load_gpt_supernet(checkpoint)
    res = export_gpt_subnet(net, arch, out, space=space, opset=opset, overwrite=overwrite,
                            checkpoint=checkpoint, prompt=ids, new_tokens=new_tokens)
    m = res.manifest
    if json_out:
        print_json({"out": str(out), "seconds": round(time.perf_counter() - t0, 3), **m})
        return
    v = m["verification"]
    genai = ("genai_config.json written (not run here)" if m["genai"]["written"]
             else "no genai_config.json (per-layer heads differ)")
    console.print(
        f"exported {m['space']}:{m['arch_hash']} ({m['macs'] / 1e6:.2f}M MACs per token, "
        f"{m['params'] / 1e6:.2f}M params) to {out}/  verified: {v['new_tokens']} greedy "
        f"tokens identical in torch and ONNX Runtime, max |onnx - torch| = "
        f"{v['max_abs_diff']:.2e} (allowed {v['allowed']:.2e}); {genai}"
    )


def verify_cmd(
    folder: Annotated[Path, typer.Argument(help="Export folder (with manifest.json).")],
    json_out: JsonOpt = False,
) -> None:
    """Re-verify an export folder: file hashes, ONNX checker, ONNX Runtime against torch.

    Every claim of the manifest is re-derived from its architecture. A GPT export folder
    (docs/gpt_export.md) re-runs its recorded greedy generation: the recorded tokens,
    identical in ONNX Runtime and torch.
    """
    from nas.export import GPT_MANIFEST_FORMAT, verify_export

    res = verify_export(folder)
    if json_out:
        print_json(res)
    elif res.get("format") == GPT_MANIFEST_FORMAT:
        console.print(f"{folder}: OK ({res['space']}:{res['arch_hash']}, {res['new_tokens']} "
                      f"greedy tokens as recorded in ONNX Runtime and torch, max |onnx - "
                      f"torch| = {res['max_abs_diff']:.2e}, allowed {res['allowed']:.2e})")
    else:
        console.print(f"{folder}: OK ({res['space']}:{res['arch_hash']}, max |onnx - torch| = "
                      f"{res['max_abs_diff']:.2e}, allowed {res['allowed']:.2e})")


def register(app: typer.Typer) -> None:
    """Add ``nas export`` and ``nas verify`` to the root app."""
    app.command("export")(export_cmd)
    app.command("verify")(verify_cmd)
