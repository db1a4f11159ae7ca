"""Time a latency measurement kit's ONNX models on this device (``python run.py``).

This file is written into every kit by ``nas latency kit`` as ``run.py``. It is standalone:
it needs Python >= 3.9, numpy and onnxruntime, and nothing else (it does not import ``nas``).
It reads ``manifest.json`` beside it and writes ``results.jsonl``: one environment line, then
one line per model.

The timing protocol (that of ``nas latency measure``, kept to its essentials):

1. Every model file is checked against the manifest's sha256 first: a file damaged in transit
   stops the run with one line, before anything is timed.
2. ONNX Runtime session options are all set explicitly from the kit's device profile (intra-
   and inter-op threads, spinning of idle threads, graph optimisation level, sequential
   execution), never left to ORT's defaults, which change between releases.
3. One fixed random input per model (standard normal, the profile's batch size); for a
   language model, one call of the kit's workload (the manifest's ``workload``: prefill of a
   prompt, or one decoding step with the KV cache filled to a context): every named axis of
   the graph's inputs sized by it, token ids int64, the cache float32. Python's
   garbage collector is off while timing. Each run is timed with ``time.perf_counter_ns``
   around ``InferenceSession.run``, the call an application makes.
4. Warm-up: every session runs at least ``warmup_runs`` times and ``warmup_s`` seconds before
   anything is recorded (memory arena, thread pool and caches reach their steady state).
5. ``--repeats`` passes; each pass times every model once, in a new shuffled order, as a block
   of ``block_warmup`` unrecorded runs then ``round_runs`` recorded runs, and before each
   model a block of the kit's *reference* model (the search space's middle subnet). A model's
   block medians are in its result line.
6. The reference's blocks, spread over the whole run, show the machine's drift (its line
   gives their spread). Each model's latency is its median ratio to the reference block
   timed just before it, times the reference's median over the whole run: a slow minute slows
   both and cancels, and the scale is that of the whole run, not of one moment. The raw median
   of the model's own runs is kept beside it (on a quiet device the two agree).

Usage::

    python run.py                 # the kit's settings; writes results.jsonl beside this file
    python run.py --threads 4     # another thread count (recorded; see README.txt)
    python run.py --repeats 9 --out /tmp/results.jsonl
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import math
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

RESULTS_FORMAT = "nas-latency-kit-results/1"
_GRAPH_OPT = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
              "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


class KitError(Exception):
    """A problem the user must fix; printed as one line."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            fields = dict(line.split(":", 1) for line in fh if ":" in line)
        for key in ("model name", "Model", "Hardware", "cpu model"):
            for k, v in fields.items():
                if k.strip() == key and v.strip():
                    return v.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def _percentile(values: list[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default)."""
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _workload_feed(np: Any, inputs: list[Any], sizes: dict[str, int],
                   seed: int) -> dict[str, Any]:
    """A language model's inputs for one call: each named axis sized by ``sizes``."""
    rng = np.random.default_rng(seed)
    feed = {}
    for inp in inputs:
        shape = []
        for d in inp.shape:
            if isinstance(d, int):
                shape.append(d)
            elif d in sizes:
                shape.append(int(sizes[d]))
            else:
                raise ValueError(f"input {inp.name!r} has an axis {d!r} the kit's workload "
                                 f"does not size ({', '.join(sorted(sizes))})")
        if inp.type == "tensor(int64)":
            feed[inp.name] = rng.integers(0, 2, size=shape, dtype=np.int64)
        elif inp.type == "tensor(float)":
            feed[inp.name] = rng.standard_normal(shape).astype(np.float32)
        else:
            raise ValueError(f"input {inp.name!r} is a {inp.type}, not token ids or a cache")
    return feed


class _Model:
    """One model's session, input and recorded times."""

    def __init__(self, ort: Any, np: Any, folder: Path, entry: dict[str, Any],
                 opts: Any, provider: str, batch: int, seed: int,
                 dims: dict[str, int] | None = None) -> None:
        self.file = str(entry["file"])
        self.sha256 = str(entry["sha256"])
        self.error: str | None = None
        self.blocks: list[float] = []
        self.runs: list[float] = []
        self.ratios: list[float] = []
        try:
            self.sess = ort.InferenceSession(str(folder / self.file), opts, providers=[provider])
            if dims is None:  # an image model: one input, its batch axis first
                inp = self.sess.get_inputs()[0]
                shape = [batch] + [int(d) for d in inp.shape[1:]]
                self.feed = {inp.name: np.random.default_rng(seed).standard_normal(shape)
                             .astype(np.float32)}
            else:
                self.feed = _workload_feed(np, self.sess.get_inputs(), {"batch": batch, **dims},
                                           seed)
            self.outputs = [o.name for o in self.sess.get_outputs()]
        except Exception as exc:  # ORT raises its own types; the result line says why
            self.error = f"session: {type(exc).__name__}: {exc}"[:2000]

    def run(self) -> None:
        self.sess.run(self.outputs, self.feed)


    def warm_up(self, runs: int, seconds: float) -> None:
        t0 = time.perf_counter()
        n = 0
        while n < runs or time.perf_counter() - t0 < seconds:
            self.run()
            n += 1

    def block(self, warm: int, runs: int) -> float:
        """``warm`` unrecorded runs, then ``runs`` timed ones; their median (ms)."""
        for _ in range(warm):
            self.run()
        clock = time.perf_counter_ns
        times = []
        for _ in range(runs):
            a = clock()
            self.run()
            times.append((clock() - a) / 1e6)
        self.runs.extend(times)
        med = _median(times)
        self.blocks.append(med)
        return med


def _options(ort: Any, device: dict[str, Any], threads: int) -> Any:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = int(device.get("inter_op_threads", 1))
    level = str(device.get("graph_optimization", "all"))
    if level not in _GRAPH_OPT:
        raise KitError(f"manifest: graph_optimization {level!r} is not one of {list(_GRAPH_OPT)}")
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _GRAPH_OPT[level])
    opts.execution_mode = (ort.ExecutionMode.ORT_PARALLEL
                           if device.get("execution_mode") == "parallel"
                           else ort.ExecutionMode.ORT_SEQUENTIAL)
    spin = "1" if device.get("allow_spinning", True) else "0"
    opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
    opts.add_session_config_entry("session.inter_op.allow_spinning", spin)
    opts.log_severity_level = 3
    return opts


def _environment(ort: Any, np: Any, manifest: dict[str, Any], threads: int,
                 runner_sha: str, args: argparse.Namespace) -> dict[str, Any]:
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        load = []
    device = manifest["device"]
    return {
        "type": "environment", "format": RESULTS_FORMAT, "kit": manifest["kit_id"],
        "runner_sha256": runner_sha,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "onnxruntime": ort.__version__, "numpy": np.__version__,
        "python": platform.python_version(), "platform": platform.platform(),
        "machine": platform.machine(), "cpu": _cpu_model(), "cpu_count": os.cpu_count(),
        "loadavg": load, "providers": list(ort.get_available_providers()),
        "provider": device.get("provider", "CPUExecutionProvider"),
        "threads": {"intra_op": threads, "inter_op": int(device.get("inter_op_threads", 1)),
                    "allow_spinning": bool(device.get("allow_spinning", True))},
        "batch_size": int(device.get("batch_size", 1)),
        "workload": (manifest.get("workload") or {}).get("describe"),
        "timing": {"repeats": args.repeats, "round_runs": args.round_runs,
                   "block_warmup": args.block_warmup, "warmup_runs": args.warmup_runs,
                   "warmup_s": args.warmup_s, "seed": args.seed},
    }


def _check_files(folder: Path, entries: list[dict[str, Any]]) -> None:
    for e in entries:
        path = folder / str(e["file"])
        if not path.is_file():
            raise KitError(f"model file {e['file']} is missing from {folder}")
        got = _sha256(path)
        if got != e["sha256"]:
            raise KitError(f"model file {e['file']} is damaged: sha256 {got[:12]}... but the "
                           f"manifest says {str(e['sha256'])[:12]}...; copy the kit again")


def _time_all(models: list[_Model], ref: _Model, args: argparse.Namespace) -> float:
    """Warm-up, then the shuffled passes; returns the seconds spent."""
    rng = random.Random(args.seed)
    t0 = time.perf_counter()
    live = [m for m in models if m.error is None]
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for m in [ref, *live]:
            m.warm_up(args.warmup_runs, args.warmup_s)
        for p in range(args.repeats):
            order = live[:]
            rng.shuffle(order)
            for m in order:
                r = ref.block(args.block_warmup, args.round_runs)
                try:
                    m.ratios.append(m.block(args.block_warmup, args.round_runs) / r)
                except Exception as exc:  # a model that fails mid-run is reported, not fatal
                    m.error = f"run (pass {p + 1}): {type(exc).__name__}: {exc}"[:2000]
                    live.remove(m)
            if not args.quiet:
                print(f"pass {p + 1}/{args.repeats} done", file=sys.stderr)
    finally:
        if gc_was:
            gc.enable()
    return time.perf_counter() - t0


def _result_line(m: _Model, kit: str, scale: float | None, role: str) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "model", "kit": kit, "file": m.file, "sha256": m.sha256,
                           "role": role}
    if m.error is not None or not m.runs or scale is None:
        out.update(status="failed", error=m.error or "not timed")
        return out
    raw = _median(m.runs)
    if role == "reference":
        lat = scale
        ratio = 1.0
    else:
        ratio = _median(m.ratios)
        lat = ratio * scale
    k = lat / raw
    blocks = [round(b, 6) for b in m.blocks]
    out.update(status="ok", latency_ms=round(lat, 6), raw_median_ms=round(raw, 6),
               ratio=round(ratio, 6), p10_ms=round(_percentile(m.runs, 10) * k, 6),
               p90_ms=round(_percentile(m.runs, 90) * k, 6), n_runs=len(m.runs),
               block_medians_ms=blocks)
    if role == "reference":
        med = _median(m.blocks)
        out["drift"] = {"block_p10": round(_percentile(m.blocks, 10) / med, 4),
                        "block_p90": round(_percentile(m.blocks, 90) / med, 4),
                        "first_block": round(m.blocks[0] / med, 4),
                        "last_block": round(m.blocks[-1] / med, 4)}
    return out


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python run.py",
        description="Time this kit's ONNX models with onnxruntime and write results.jsonl "
        "(send it back, with nothing changed, for `nas latency import`).")
    ap.add_argument("--kit", type=Path, default=Path(__file__).resolve().parent,
                    help="the kit folder (default: this file's folder)")
    ap.add_argument("--threads", type=int, default=None,
                    help="ONNX Runtime intra-op threads (default: the kit's device profile; "
                    "results timed with another count are refused on import)")
    ap.add_argument("--repeats", type=int, default=None,
                    help="passes over all models (default: the kit's, usually 5)")
    ap.add_argument("--out", type=Path, default=None,
                    help="results file (default: results.jsonl in the kit folder)")
    ap.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = ap.parse_args(argv)
    return args


def _dims(workload: Any) -> dict[str, int] | None:
    """The manifest's workload axes (None for an image kit)."""
    if workload is None:
        return None
    dims = workload.get("dims") if isinstance(workload, dict) else None
    if not isinstance(dims, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
            for k, v in dims.items()):
        raise KitError("manifest: workload.dims must map axis names to sizes >= 0")
    return dims


def _load_manifest(folder: Path) -> dict[str, Any]:
    path = folder / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise KitError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise KitError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or "kit_id" not in manifest or "models" not in manifest:
        raise KitError(f"{path} is not a latency kit's manifest")
    return manifest


def main(argv: list[str] | None = None) -> int:
    """Run the kit; returns the exit status."""
    args = _parse(argv)
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError as exc:
        print(f"error: {exc.name} is needed: pip install numpy onnxruntime", file=sys.stderr)
        return 2
    try:
        folder = args.kit
        manifest = _load_manifest(folder)
        timing = manifest.get("timing", {})
        device = manifest["device"]
        threads = args.threads if args.threads is not None else int(
            device.get("intra_op_threads", 1))
        args.repeats = args.repeats if args.repeats is not None else int(
            timing.get("repeats", 5))
        if threads < 1 or args.repeats < 1:
            raise KitError(f"--threads and --repeats must be >= 1, got {threads} and "
                           f"{args.repeats}")
        for key, default in (("round_runs", 10), ("block_warmup", 2), ("warmup_runs", 5),
                             ("warmup_s", 0.1), ("seed", 0)):
            setattr(args, key, type(default)(timing.get(key, default)))
        out = args.out if args.out is not None else folder / "results.jsonl"
        provider = str(device.get("provider", "CPUExecutionProvider"))
        if provider not in ort.get_available_providers():
            raise KitError(f"execution provider {provider} is not available here; available: "
                           f"{ort.get_available_providers()}")
        entries = [manifest["reference"], *manifest["models"]]
        _check_files(folder, entries)
        runner_sha = _sha256(Path(__file__).resolve())
        env = _environment(ort, np, manifest, threads, runner_sha, args)
        opts = _options(ort, device, threads)
        batch = int(device.get("batch_size", 1))
        seed = args.seed
        workload = manifest.get("workload")
        dims = _dims(workload)
        ref = _Model(ort, np, folder, manifest["reference"], opts, provider, batch, seed + 1,
                     dims)
        if ref.error is not None:
            raise KitError(f"the reference model cannot run here: {ref.error}")
        models = [_Model(ort, np, folder, e, opts, provider, batch, seed, dims)
                  for e in manifest["models"]]
        if not args.quiet:
            what = f", each call {workload['describe']}" if workload else ""
            print(f"timing {len(models)} models and the reference, {args.repeats} passes, "
                  f"{threads} thread(s){what}", file=sys.stderr)
        seconds = _time_all(models, ref, args)
        scale = _median(ref.blocks) if ref.blocks else None
        env["seconds"] = round(seconds, 3)
        lines = [env, _result_line(ref, manifest["kit_id"], scale, "reference")]
        lines += [_result_line(m, manifest["kit_id"], scale, "subnet") for m in models]
        text = "".join(json.dumps(line, sort_keys=True) + "\n" for line in lines)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)  # a reader never sees half a file
    except KitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    n_ok = sum(line.get("status") == "ok" for line in lines[2:])
    if not args.quiet:
        drift = lines[1].get("drift", {})
        print(f"{n_ok} of {len(models)} models timed in {seconds:.1f} s; reference blocks "
              f"p10..p90 {drift.get('block_p10')}..{drift.get('block_p90')} of their median",
              file=sys.stderr)
    print(f"wrote {out}: send this file back (nas latency import)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
