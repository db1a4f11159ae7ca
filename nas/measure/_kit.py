"""Measurement kits: latency for devices outside the cluster.

``nas latency kit`` writes a folder to copy onto a device nothing here can reach (a phone, a
Raspberry Pi, a Jetson)::

    manifest.json   the kit: its id, space, device profile, timing settings, and per model the
                    file, its sha256, its architecture (OFA format) and the architecture hash
    run.py          the runner (nas/measure/_kit_runner.py): Python >= 3.9, numpy, onnxruntime
    README.txt      what to run on the device and what to send back
    reference.onnx  the space's reference subnet (every dimension at its middle choice)
    000_<hash>.onnx ...  the subnets to time

The kit is recorded in the latency database when it is made (its id, device profile, runner
and each model file's sha256 and architecture: :class:`nas.db.KitRecord`). The runner writes
``results.jsonl`` (an environment line, then one line per model) and ``nas latency import``
takes it back: every line is checked against the manifest beside it
(:func:`read_kit_results`), then against the record (:func:`check_kit_record`), since the
manifest travelled with the kit and may have been edited; results that are not the kit's are
refused, nothing stored.

Models are exported from one randomly initialised supernet: latency does not depend on the
weights, only on the graph, so the kit needs no trained checkpoint. Kit results are stored
with source :data:`KIT_SOURCE` and ``env["kit"]`` naming the kit (its id, the model file, its
sha256, the block medians) and ``env["fingerprint"]`` the device's environment line.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas._io import check_path, read_text
from nas.devices import DeviceProfile, check_device_name, get_device
from nas.errors import ConfigError, DataError, NASError, UnknownNameError
from nas.space import Architecture, SearchSpace, get_space

if TYPE_CHECKING:
    from nas.db import KitRecord, LatencyDB
    from nas.measure._sampling import PriorSource, Selection

__all__ = [
    "KIT_FORMAT",
    "KIT_SOURCE",
    "MAX_KIT_MODELS",
    "RESULTS_FORMAT",
    "KitReport",
    "KitResults",
    "check_kit_record",
    "kit_files",
    "kit_profile",
    "read_kit_results",
    "runner_source",
    "write_kit",
]

KIT_FORMAT = "nas-latency-kit/1"
RESULTS_FORMAT = "nas-latency-kit-results/1"
#: The source kit results are stored with (``env["kit"]`` also names the kit).
KIT_SOURCE = "kit"
#: The most subnets one kit holds (a kit is copied to small devices).
MAX_KIT_MODELS = 2000
#: The runner's timing settings, written into the manifest (the runner reads them there).
DEFAULT_TIMING: dict[str, Any] = {"repeats": 5, "round_runs": 10, "block_warmup": 2,
                                  "warmup_runs": 5, "warmup_s": 0.1, "seed": 0}
_WEIGHTS_NOTE = ("random: every model is extracted from one randomly initialised supernet; "
                 "latency depends on the graph (layers, shapes), not on the weights")
_RESULTS = "results.jsonl"
_MANIFEST = "manifest.json"


def runner_source() -> str:
    """The runner's source, as written into each kit as ``run.py``."""
    return resources.files("nas.measure").joinpath("_kit_runner.py").read_text(encoding="utf-8")


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------- writing a kit
@dataclass(frozen=True)
class KitReport:
    """What :func:`write_kit` wrote.

    Attributes:
        path: the kit folder.
        kit_id: the kit's id (every result line carries it).
        space: the search space.
        device: the device profile the kit times under.
        n_models: subnets in the kit (the reference not counted).
        selection: how they were chosen.
        bytes: size of the kit's files.
    """

    path: Path
    kit_id: str
    space: str
    device: DeviceProfile
    n_models: int
    selection: dict[str, Any]
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {"path": str(self.path), "kit_id": self.kit_id, "space": self.space,
                "device": self.device.name, "threads": self.device.intra_op_threads,
                "n_models": self.n_models, "selection": self.selection, "bytes": self.bytes,
                "run": "python run.py", "send_back": _RESULTS}


def kit_profile(device: str, threads: int | None = None) -> DeviceProfile:
    """The profile a kit for ``device`` times under: the device's own, or a new external one
    for an unknown name (``threads`` intra-op threads, default 1).

    Raises:
        ConfigError: ``threads`` differs from a known device's profile, or a bad name.
    """
    try:
        profile = get_device(device)
    except UnknownNameError:
        check_device_name(device)
        return DeviceProfile(device, external=True, intra_op_threads=threads or 1,
                             description="External device, timed with a latency kit")
    if threads is not None and threads != profile.intra_op_threads:
        raise ConfigError(
            f"--threads {threads}: device {device}'s profile has intra_op_threads "
            f"{profile.intra_op_threads}; leave --threads out or name another device"
        )
    return profile


def _kit_device(device: str | DeviceProfile) -> DeviceProfile:
    if isinstance(device, str):
        return kit_profile(device)
    if not isinstance(device, DeviceProfile):
        raise ConfigError(f"device must be a device name or a DeviceProfile, got "
                          f"{type(device).__name__}")
    try:
        known = get_device(device.name)
    except UnknownNameError:
        return device
    def settings(p: DeviceProfile) -> dict[str, Any]:
        return {k: v for k, v in p.to_dict().items() if k != "description"}

    if settings(known) != settings(device):
        diff = sorted(k for k, v in settings(device).items() if settings(known).get(k) != v)
        raise ConfigError(
            f"device {device.name}: the profile given differs from the registered one in "
            f"{', '.join(diff)}; pass the name, or give the profile another name")
    return known


def _check_out(out: Path) -> Path:
    out = check_path(out, "--out", error=ConfigError)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out} exists and is not an empty folder; choose a new one")
    return out


def _readme(manifest: dict[str, Any]) -> str:
    dev = manifest["device"]
    t = manifest["timing"]
    n = len(manifest["models"])
    return f"""Latency measurement kit {manifest['kit_id']}
search space {manifest['space']}, device {dev['name']}, {n} subnets + 1 reference

What to do on the device
------------------------
1. Copy this whole folder onto the device.
2. Install Python >= 3.9, numpy and onnxruntime (nothing else is needed):
       pip install numpy onnxruntime
3. Close what else runs on the device (it is being timed), then, in this folder:
       python run.py
   (about {_eta(manifest):.0f} s on a desktop CPU, longer on a small device). Options:
       --threads T   ONNX Runtime intra-op threads (default {dev['intra_op_threads']}, the
                     kit's device profile). Results timed with another count are refused
                     on import: ask for a kit made for T threads instead.
       --repeats R   passes over all models (default {t['repeats']}; more is steadier)
       --out FILE    where to write the results (default: results.jsonl here)
       --quiet       no progress lines
4. Send back results.jsonl, unchanged (one JSON line per model, and one line that
   describes the device: onnxruntime, numpy, platform, CPU, Python, threads, time).

Back home, with results.jsonl put into the kit's folder, into the latency database
the kit was made with (it recorded the kit; give the same --db):
       nas latency import KIT_FOLDER/results.jsonl     (or: nas latency import KIT_FOLDER)

How it times (the protocol of `nas latency measure`): session options set explicitly
from the device profile; a fixed random input; warm-up of every model; {t['repeats']}
passes, each over all models in a shuffled order, each model a block of {t['round_runs']}
timed runs (after {t['block_warmup']} untimed) preceded by a block of the reference model;
the latency is the model's median ratio to the reference times the reference's median
over the whole run, so the device slowing down for a minute does not move it.

Do not edit the .onnx files, manifest.json or run.py: every result carries the sha256
of the model it timed and the import refuses what does not match this kit as it was
recorded when made. A kit's results are imported once.
Weights: {_WEIGHTS_NOTE}.
"""


def _eta(manifest: dict[str, Any]) -> float:
    """A rough duration of the run on a fast machine (for the README)."""
    t = manifest["timing"]
    per_block_s = 0.003 * (t["round_runs"] + t["block_warmup"])
    n = len(manifest["models"])
    return (n + 1) * t["warmup_s"] + 2 * n * t["repeats"] * per_block_s + 1


def _entry(file: str, data: bytes, arch: Architecture, macs: int) -> dict[str, Any]:
    out = {"file": file, "sha256": _sha256(data), "arch": arch.to_dict(), "hash": arch.hash,
           "macs": int(macs)}
    if hasattr(arch, "r"):  # an image subnet's input; a language model's is the workload's
        out["resolution"] = arch.r
    return out


def _export_models(sp: SearchSpace, profile: DeviceProfile, archs: list[Architecture],
                   folder: Path, progress: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Export the reference and ``archs`` into ``folder``; their manifest entries."""
    from nas._term import progress_bar
    from nas.measure._measure import _default_supernet, _family_export, _res
    from nas.measure._prepare import one_torch_thread, prepare_model

    ref_arch = sp.middle()
    macs = sp.costs([ref_arch, *archs])["macs"]
    entries = []
    with one_torch_thread(), progress_bar(f"exporting {sp.name} subnets", len(archs) + 1,
                                          enabled=progress) as advance:
        net, export = _default_supernet(sp), _family_export(sp)
        for i, arch in enumerate([ref_arch, *archs]):
            model = prepare_model(export(net, arch), profile, _res(arch))
            name = "reference.onnx" if i == 0 else f"{i - 1:03d}_{arch.hash[:12]}.onnx"
            (folder / name).write_bytes(model)
            entries.append(_entry(name, model, arch, macs[i]))
            advance()
    return entries[0], entries[1:]


def _measured(db: LatencyDB, device: str, space: str) -> list[Architecture]:
    from nas.db import TIMED_SOURCES

    return [r.arch for r in db.measurements(device, space)
            if r.source in TIMED_SOURCES]


def write_kit(
    space: str | SearchSpace, device: str | DeviceProfile, n: int, out: Path | str, *,
    db: LatencyDB, seed: int = 0, select: str = "auto", priors: PriorSource | None = None,
    repeats: int | None = None, progress: bool = False,
) -> KitReport:
    """Write a measurement kit for ``device`` into the new folder ``out``, and record it in
    ``db``.

    The subnets are chosen by :func:`~nas.measure.select_for_measurement` (by default, for a
    device with few measurements, those the other devices' predictors disagree on most,
    spread over the MAC range, when ``priors`` gives them), never one the device already has
    a measurement of, nor the reference. The kit is recorded in ``db`` (its id, device
    profile, runner and each model file's sha256 and architecture) before the folder appears:
    its results are imported into that database only, checked against the record. The folder
    is written whole or not at all.

    Args:
        space: the search space.
        device: a device profile's name (an unknown name gets an external profile with one
            thread, written into the manifest; the import creates it), or a profile
            (:func:`kit_profile`: a new device with another thread count).
        n: subnets to time (1 .. :data:`MAX_KIT_MODELS`).
        out: a folder that does not exist yet (or is empty).
        db: the latency database: the device's measurements, and where the kit is recorded.
        seed: seed of the choice.
        select: ``auto``, ``mixed``, ``spread`` or ``informative``.
        priors: the other devices' predictions, for ``informative``
            (:func:`nas.latency.prior_predictions` reads the predictors stored in ``db``).
        repeats: the runner's default passes (default 5).
        progress: show a progress bar while exporting.

    Raises:
        ConfigError: a bad argument or an ``out`` that is in use; nothing is written.
    """
    sp = get_space(space)
    if not 1 <= n <= MAX_KIT_MODELS:
        raise ConfigError(f"--n must be in 1..{MAX_KIT_MODELS}, got {n}")
    if repeats is not None and not 1 <= repeats <= 1000:
        raise ConfigError(f"--repeats must be in 1..1000, got {repeats}")
    profile = _kit_device(device)
    sp.check_workload(profile.workload, profile.name)
    out = _check_out(Path(out))
    sel, n_done = _choose(sp, profile, n, seed, select, db, priors)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        tmp.chmod(0o755)  # mkdtemp's 0700 would keep the kit from whoever copies it
        ref, models = _export_models(sp, profile, sel.archs, tmp, progress)
        runner = runner_source().encode("utf-8")
        (tmp / "run.py").write_bytes(runner)
        manifest: dict[str, Any] = {
            "format": KIT_FORMAT, "kit_id": uuid.uuid4().hex[:16],
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "space": sp.name, "device": profile.to_dict(),
            "timing": {**DEFAULT_TIMING, **({"repeats": repeats} if repeats else {})},
            "weights": _WEIGHTS_NOTE,
            "selection": {**sel.to_dict(), "seed": seed, "n": n,
                          "device_measurements": n_done},
            "runner": {"file": "run.py", "sha256": _sha256(runner)},
            "reference": ref, "models": models,
        }
        if profile.workload is not None:  # the runner sizes each named axis of the graph
            manifest["workload"] = {"describe": profile.workload.describe(),
                                    "dims": profile.workload.dims()}
        (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        (tmp / "README.txt").write_text(_readme(manifest), encoding="utf-8")
        size = sum(p.stat().st_size for p in tmp.iterdir())
        db.record_kit(_record(manifest, sp, profile))  # before the kit exists, never after
        if out.exists():
            out.rmdir()  # empty, checked above
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return KitReport(out, manifest["kit_id"], sp.name, profile, len(models),
                     manifest["selection"], size)


def _choose(sp: SearchSpace, profile: DeviceProfile, n: int, seed: int, select: str,
            db: LatencyDB, priors: PriorSource | None) -> tuple[Selection, int]:
    """The kit's subnets, and how many the device has measured already."""
    from nas.db import LatencyDB
    from nas.measure._sampling import select_for_measurement

    if not isinstance(db, LatencyDB):
        raise ConfigError(f"db must be the LatencyDB the kit is recorded in (its results are "
                          f"imported there), got {type(db).__name__}")
    done = _measured(db, profile.name, sp.name)
    sel = select_for_measurement(
        sp, n, seed, method=select, db=db, device=profile.name, priors=priors,
        exclude=[*done, sp.middle()], n_measured=len(done))
    return sel, len(done)


def _record(manifest: dict[str, Any], sp: SearchSpace, profile: DeviceProfile) -> KitRecord:
    """The kit as home records it: what its results are checked against."""
    from nas.db import KitModel, KitRecord

    models = [KitModel(e["file"], role, e["sha256"], sp.parse(e["arch"]))
              for role, e in [("reference", manifest["reference"]),
                              *(("model", e) for e in manifest["models"])]]
    return KitRecord(manifest["kit_id"], sp.name, profile, manifest["runner"]["sha256"],
                     tuple(models))


# ---------------------------------------------------------------------- reading results
@dataclass(frozen=True)
class KitResults:
    """A kit's results, checked against its manifest, as rows ready to store.

    Attributes:
        kit_id: the kit's id.
        space: its search space.
        device: the device profile it was made for.
        results: the results file.
        rows: one validated measurement row per result (reference included).
        missing: model files of the kit with no result line.
        environment: the device's environment line.
    """

    kit_id: str
    space: str
    device: DeviceProfile
    results: Path
    rows: list[dict[str, Any]]
    missing: tuple[str, ...]
    environment: dict[str, Any]


def _read_json(path: Path, what: str) -> Any:
    text = read_text(path, what, error=DataError)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise DataError(f"{what} {path} is not valid JSON: {exc}") from None
    except RecursionError:
        raise DataError(f"{what} {path}: JSON nested too deep") from None


def _is_kit_manifest(path: Path) -> bool:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # deep nesting: not ours either
        return False
    return isinstance(obj, dict) and obj.get("format") == KIT_FORMAT


def _looks_like_results(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as fh:
            first = json.loads(fh.readline())
    except (OSError, ValueError, RecursionError):  # deep nesting: not a kit's results
        return False
    return isinstance(first, dict) and first.get("format") == RESULTS_FORMAT


def kit_files(path: Path | str, kit: Path | str | None = None) -> tuple[Path, Path] | None:
    """``(results, manifest)`` when ``path`` is a kit folder or a kit's results file (its
    manifest beside it, or in ``kit``); ``None`` for any other file.

    Raises:
        DataError: a kit folder without results, or kit results without their manifest.
    """
    path = check_path(Path(path), "import path", error=DataError)
    if kit is not None:
        folder = check_path(Path(kit), "--kit", error=DataError)
        if not (folder / _MANIFEST).is_file():
            raise DataError(f"--kit {folder}: no {_MANIFEST} there; give the kit's folder")
        results = path / _RESULTS if path.is_dir() else path
        return results, folder / _MANIFEST
    if path.is_dir():
        if not (path / _MANIFEST).is_file():
            raise DataError(f"{path} is a folder but not a latency kit (no {_MANIFEST})")
        if not (path / _RESULTS).is_file():
            raise DataError(f"{path}: no {_RESULTS} in the kit yet; run `python run.py` on "
                            "the device and copy its results.jsonl here")
        return path / _RESULTS, path / _MANIFEST
    beside = path.parent / _MANIFEST
    if beside.is_file() and _is_kit_manifest(beside):
        return path, beside
    if path.is_file() and _looks_like_results(path):
        raise DataError(f"{path} holds a latency kit's results but no kit manifest is beside "
                        "it; put it in the kit's folder or pass --kit DIR")
    return None


def _manifest(path: Path) -> dict[str, Any]:
    m = _read_json(path, "kit manifest")
    if not isinstance(m, dict) or m.get("format") != KIT_FORMAT:
        got = m.get("format") if isinstance(m, dict) else type(m).__name__
        raise DataError(f"{path}: format {got!r} is not a latency kit's ({KIT_FORMAT!r})")
    for key in ("kit_id", "space", "device", "runner", "reference", "models"):
        if key not in m:
            raise DataError(f"{path}: kit manifest without {key!r}")
    return m


def _finite_positive(v: Any) -> bool:
    return (isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            and v > 0)


def _check_env(env: dict[str, Any], m: dict[str, Any], where: str) -> None:
    if env.get("kit") != m["kit_id"]:
        raise DataError(f"{where}: results of kit {env.get('kit')!r}, but the manifest is "
                        f"kit {m['kit_id']!r} (results from another kit); nothing imported")
    if env.get("runner_sha256") != m["runner"]["sha256"]:
        raise DataError(f"{where}: written by a run.py that is not the kit's (sha256 "
                        f"{str(env.get('runner_sha256'))[:12]}..., the kit's "
                        f"{m['runner']['sha256'][:12]}...); run the kit's own run.py")
    threads = (env.get("threads") or {}).get("intra_op")
    want = m["device"].get("intra_op_threads", 1)
    if threads != want:
        raise DataError(f"{where}: timed with {threads} intra-op thread(s) but the kit's device "
                        f"{m['device']['name']} has {want}; make a kit with --threads "
                        f"{threads} for a device of that name, or run without --threads")


def _model_row(rec: dict[str, Any], entry: dict[str, Any], sp: SearchSpace,
               env: dict[str, Any], source_file: str, where: str) -> dict[str, Any]:
    """One result line as a validated measurement row."""
    from nas.db import validate_measurement

    name = entry["file"]
    if rec.get("sha256") != entry["sha256"]:
        raise DataError(f"{where}: model {name}: sha256 {str(rec.get('sha256'))[:12]}... is not "
                        f"the kit's ({entry['sha256'][:12]}...): the model timed is not the "
                        "kit's; nothing imported")
    arch = sp.parse(entry["arch"])
    if arch.hash != entry["hash"]:
        raise DataError(f"{where}: model {name}: the manifest's architecture hashes to "
                        f"{arch.hash}, not {entry['hash']}; the manifest was edited")
    status = rec.get("status")
    kit = {"id": env["kit"], "file": name, "sha256": entry["sha256"], "role": rec.get("role")}
    if status == "failed":
        return validate_measurement(
            arch, None, status="failed", error=str(rec.get("error") or "failed on the device"),
            source=KIT_SOURCE, env={"kit": kit, "fingerprint": env,
                                    "imported_from": source_file})
    if status != "ok":
        raise DataError(f"{where}: model {name}: status must be 'ok' or 'failed', got "
                        f"{status!r}")
    lat: Any = rec.get("latency_ms")
    if not _finite_positive(lat):
        raise DataError(f"{where}: model {name}: latency_ms must be a finite number > 0, got "
                        f"{lat!r}; nothing imported")
    blocks = rec.get("block_medians_ms")
    if not isinstance(blocks, list) or not blocks or not all(map(_finite_positive, blocks)):
        raise DataError(f"{where}: model {name}: block_medians_ms must be a non-empty list of "
                        f"finite numbers > 0, got {str(blocks)[:60]}; nothing imported")
    for key in ("raw_median_ms", "ratio", "p10_ms", "p90_ms"):
        if key in rec and not _finite_positive(rec[key]):
            raise DataError(f"{where}: model {name}: {key} must be a finite number > 0, got "
                            f"{rec[key]!r}; nothing imported")
    kit.update(raw_median_ms=rec.get("raw_median_ms"), ratio=rec.get("ratio"),
               block_medians_ms=blocks)
    if "drift" in rec:
        kit["drift"] = rec["drift"]
    n_runs = rec.get("n_runs", 0)
    try:
        return validate_measurement(
            arch, float(lat), p10=rec.get("p10_ms"), p90=rec.get("p90_ms"),
            n_runs=n_runs if isinstance(n_runs, int) else -1, status="ok", source=KIT_SOURCE,
            env={"kit": kit, "fingerprint": env, "imported_from": source_file})
    except NASError as exc:
        raise DataError(f"{where}: model {name}: {exc}; nothing imported") from None


def _json_line(line: str, where: str) -> dict[str, Any]:
    try:
        rec = json.loads(line)
    except ValueError as exc:
        raise DataError(f"{where}: not valid JSON ({exc})") from None
    except RecursionError:
        raise DataError(f"{where}: JSON nested too deep") from None
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    return rec


def _model_name(rec: dict[str, Any], m: dict[str, Any], entries: dict[str, Any],
                seen: set[str], where: str) -> str:
    """The model file a result line is for, checked: the kit's, once."""
    if rec.get("type") != "model":
        raise DataError(f"{where}: type must be 'environment' or 'model', got "
                        f"{rec.get('type')!r}")
    name: Any = rec.get("file")
    if rec.get("kit") != m["kit_id"]:
        raise DataError(f"{where}: model {name}: a result of kit {rec.get('kit')!r}, not of "
                        f"kit {m['kit_id']!r}; nothing imported")
    if not isinstance(name, str) or name not in entries:
        raise DataError(f"{where}: model {name!r} is not one of the kit's "
                        f"{len(entries)} models; nothing imported")
    if name in seen:
        raise DataError(f"{where}: model {name}: a second result; nothing imported")
    return name


def _result_rows(text: str, m: dict[str, Any], sp: SearchSpace, results: Path
                 ) -> tuple[dict[str, Any], list[dict[str, Any]], set[str]]:
    """``(environment, rows, model files seen)`` of a results file, checked line by line
    against the manifest ``m``."""
    entries = {e["file"]: e for e in [m["reference"], *m["models"]]}
    env: dict[str, Any] | None = None
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{results}: line {n}"
        rec = _json_line(line, where)
        if rec.get("type") == "environment":
            if env is not None:
                raise DataError(f"{where}: a second environment line (results of two runs "
                                "concatenated?); nothing imported")
            _check_env(rec, m, where)
            env = {k: v for k, v in rec.items() if k != "type"}
            continue
        if env is None:
            raise DataError(f"{where}: a result before the environment line; the file is not "
                            "what run.py writes")
        name = _model_name(rec, m, entries, seen, where)
        seen.add(name)
        rows.append(_model_row(rec, entries[name], sp, env, results.name, where))
    if env is None:
        raise DataError(f"{results}: no environment line; the file is not what run.py writes")
    if not rows:
        raise DataError(f"{results}: no results")
    return env, rows, seen


def read_kit_results(
    path: Path | str, *, kit: Path | str | None = None, device: str | None = None,
    space: str | None = None,
) -> KitResults:
    """Read a kit's ``results.jsonl`` and check it against the kit's manifest; nothing is
    written.

    Refused, in one line naming the line and the model: a result whose model file is not one
    of the kit's, whose sha256 is not the manifest's for that file, a second result for one
    model, a latency that is not a finite number > 0, results of another kit (their kit id),
    of a modified runner, or timed with another thread count than the kit's device. Models
    with no result line are not an error: what is there is imported and the missing files
    are listed (a model the device could not run has a ``failed`` line instead, stored as
    a failed measurement).

    The manifest came back with the results, so this check is only as good as it is: on
    import, :func:`check_kit_record` checks the results again against what the database
    recorded when the kit was made.

    Args:
        path: the kit folder or its results file.
        kit: the kit folder, when the results file is elsewhere.
        device: when given, must be the kit's device.
        space: when given, must be the kit's space.

    Raises:
        DataError: as above; nothing is written.
    """
    files = kit_files(path, kit)
    if files is None:
        raise DataError(f"{path} is not a latency kit's results (no kit manifest beside it)")
    results, mpath = files
    m = _manifest(mpath)
    for key, given, have in (("device", device, m["device"].get("name")),
                             ("space", space, m["space"])):
        if given is not None and given != have:
            raise DataError(f"--{key} {given}: the kit in {mpath.parent} is for {key} {have!r}; "
                            f"leave --{key} out")
    sp = get_space(m["space"])
    profile = DeviceProfile.from_dict(m["device"], where=f"{mpath}: device")
    text = read_text(results, "kit results", error=DataError)
    env, rows, seen = _result_rows(text, m, sp, results)
    files_in_kit = [e["file"] for e in [m["reference"], *m["models"]]]
    missing = tuple(f for f in files_in_kit if f not in seen)
    return KitResults(m["kit_id"], sp.name, profile, results, rows, missing, env)


def check_kit_record(record: KitRecord, rows: list[dict[str, Any]], device: str, space: str,
                     results: Path) -> tuple[str, ...]:
    """Check a kit's result rows (:func:`read_kit_results`) against the kit as the database
    recorded it when it was made, not as its manifest says now.

    Returns:
        The recorded model files with no result.

    Raises:
        DataError: one line: a model file the kit was not made with, a sha256 or an
            architecture other than recorded (the manifest or a model was changed), another
            runner, thread count, device or space.
    """
    kit = record.kit_id
    edited = "the kit's files or manifest.json were changed after it was made; nothing imported"
    if (device, space) != (record.device.name, record.space):
        raise DataError(f"{results}: the manifest says device {device!r}, space {space!r}, but "
                        f"kit {kit} was made for device {record.device.name!r}, space "
                        f"{record.space!r}; {edited}")
    env = json.loads(rows[0]["env"])["fingerprint"]
    if env.get("runner_sha256") != record.runner_sha256:
        raise DataError(f"{results}: written by a run.py that is not the one kit {kit} was made "
                        f"with; {edited}")
    threads = (env.get("threads") or {}).get("intra_op")
    if threads != record.device.intra_op_threads:
        raise DataError(f"{results}: timed with {threads} intra-op thread(s) but kit {kit} was "
                        f"made for {record.device.intra_op_threads}; {edited}")
    seen = set()
    for r in rows:
        claim = json.loads(r["env"])["kit"]
        name = claim["file"]
        model = record.model(name)
        if model is None:
            raise DataError(f"{results}: model {name} is not one of the {len(record.models)} "
                            f"models kit {kit} was made with; {edited}")
        if claim["sha256"] != model.sha256:
            raise DataError(f"{results}: model {name}: sha256 {claim['sha256'][:12]}... is not "
                            f"the {model.sha256[:12]}... recorded when kit {kit} was made: "
                            f"the model timed is not the kit's; {edited}")
        if r["arch"].hash != model.arch.hash:
            raise DataError(f"{results}: model {name}: the manifest gives architecture "
                            f"{r['arch'].hash}, but kit {kit} recorded {model.arch.hash} for "
                            f"it; {edited}")
        seen.add(name)
    return tuple(m.file for m in record.models if m.file not in seen)
