"""Searches and exports run by the service: submitted configs checked, searches run in
background threads of the replica (their Evaluator actors in the same Ray cluster), exports
written under one fixed folder.

Nothing a request names reaches the file system unchecked: the service chooses the study
storage, the latency database and every output path; ids are tokens it made (16 hex digits);
every path a config names (checkpoint, data, each free-text option of the proxy, read by the
same spec parser the workers use) must lie inside the folders the operator allowed once
symlinks are resolved, and the search then gets the resolved path. Whether a file outside
them exists is never said.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.errors import ConfigError, NASError
from nas.serve._limits import SEARCH_CAPS
from nas.serve._settings import ServiceSettings

if TYPE_CHECKING:
    from nas.search import SearchConfig

__all__ = ["ExportRecord", "Jobs", "SearchJob", "check_id", "checked_path", "counts"]

_ID_RE = re.compile(r"^[0-9a-f]{16}$")
_FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
#: datasets the loader knows by name (no file behind them)
_BUILTIN_DATA = ("digits",)
#: fields of a search config that the service sets itself
_SERVICE_FIELDS = ("storage", "db", "address")
#: proxy options a request may set (all scalars; none is a path)
_PROXY_OPTIONS = ("seed", "channels_last", "val_limit", "bn_batches", "bn_batch_size",
                  "eval_batch_size")


class RequestError(NASError):
    """A request names something the service refuses; ``loc`` is the field, ``status`` the
    HTTP status."""

    def __init__(self, loc: tuple[str | int, ...], msg: str, status: int = 422) -> None:
        super().__init__(msg)
        self.loc = loc
        self.status = status


def check_id(value: str, what: str) -> str:
    """``value`` if it is an id the service could have made (16 lowercase hex digits)."""
    if not _ID_RE.match(value):
        raise RequestError(("path", f"{what}_id"),
                           f"{what} id must be 16 hex digits, got {value!r}")
    return value


def checked_path(value: str, roots: tuple[Path, ...], loc: tuple[str | int, ...]) -> str:
    """The resolved ``value`` if it lies inside one of ``roots`` (symlinks followed) and
    exists. Whether a path outside the roots exists is never said."""
    if not roots:
        raise RequestError(loc, "this service accepts no file paths in requests (start it with "
                           "--allow-root DIR to allow a folder)")
    try:
        resolved = Path(value).resolve()
    except (OSError, RuntimeError, ValueError):
        raise RequestError(loc, f"{value!r} is not a usable path") from None
    if not any(resolved == root or root in resolved.parents for root in roots):
        raise RequestError(loc, f"{value!r} is outside the folders this service allows")
    if not resolved.exists():
        raise RequestError(loc, f"{value!r} does not exist")
    return str(resolved)


def counts(res: Any) -> tuple[int, int]:
    """Trials completed and failed (not counting those run again) of a stored search: the
    one source of both the list of searches and each search's status."""
    return (res.n_complete, res.n_failed) if res is not None else (0, 0)


def _check_request_fields(raw: dict[str, Any]) -> None:
    """Refuse what a request may not set: the service's own fields, a proxy option that is
    not a scalar setting, an effort above :data:`~nas.serve._limits.SEARCH_CAPS`."""
    for key in _SERVICE_FIELDS:
        if raw.get(key) is not None:
            raise RequestError(("body", key), f"{key} is set by the service, not by a "
                               "request; leave it out")
    for key, cap in SEARCH_CAPS.items():
        value = raw.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > cap:
            raise RequestError(("body", key), f"{key} = {value} is above this service's "
                               f"limit of {cap}")
    opts = raw.get("proxy_options") or {}
    for key in opts if isinstance(opts, dict) else ():
        if key not in _PROXY_OPTIONS:
            raise RequestError(("body", "proxy_options", key), f"unknown proxy option "
                               f"{key!r}; allowed: {', '.join(_PROXY_OPTIONS)}")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__


def _validated(raw: dict[str, Any]) -> SearchConfig:
    """``SearchConfig.from_dict(raw)`` (the engine's model); a bad field is a 422 naming it
    (the first part of the one-line ``where: field = value: message`` form)."""
    from nas.search import ENGINES, SearchConfig

    try:
        return SearchConfig.from_dict(raw, where="search config")
    except ConfigError as exc:
        msg = str(exc).removeprefix("search config: ")
        field = re.match(r"^([A-Za-z_][\w.:-]*)(?: = |: )", msg)
        fields = {f for _, e in ENGINES.items() for f in e.config.model_fields}
        loc: tuple[str | int, ...] = ("body",)
        if field and field.group(1).split(".")[0] in fields | set(SearchConfig.model_fields):
            loc = ("body", *field.group(1).split(".", 1))
        raise RequestError(loc, msg) from None


def _checked_proxy(spec: str, roots: tuple[Path, ...]) -> str:
    """``spec`` with each free-text option (a file name, e.g. ``predictor``'s ``path``)
    checked against ``roots`` and resolved; read by the same parser the workers use."""
    from nas.proxies import Proxy

    try:
        cls, opts = Proxy.check_spec(spec)
    except NASError as exc:
        raise RequestError(("body", "proxy"), _one_line(exc)) from None
    changed = dict(opts)
    for key in cls.free_text_options():
        if opts[key]:
            changed[key] = checked_path(str(opts[key]), roots, ("body", "proxy"))
    if changed == opts:
        return spec
    extra = {k: v for k, v in changed.items() if v != cls.options[k]}
    rebuilt = cls.name + (":" + ",".join(f"{k}={v}" for k, v in sorted(extra.items()))
                          if extra else "")
    try:
        same = Proxy.check_spec(rebuilt)[1] == changed
    except NASError:
        same = False
    if not same:  # e.g. a resolved path with a ',' in it: refused rather than misread
        raise RequestError(("body", "proxy"), "a path in the proxy spec cannot be written "
                           "back as one option (no ',' or leading/trailing blanks)")
    return rebuilt


def _check_devices(config: Any) -> None:
    """Every device the search prices is a known profile (a 422 listing them if not)."""
    from nas.devices import get_device

    for dev in config.devices:
        try:
            get_device(dev)
        except NASError as exc:
            field = "objectives" if f"latency:{dev}" in config.objectives else "constraints"
            raise RequestError(("body", field), _one_line(exc)) from None


@dataclass
class SearchJob:
    id: str
    config: SearchConfig
    stop: threading.Event = field(default_factory=threading.Event)
    status: str = "pending"
    error: str | None = None
    thread: threading.Thread | None = None
    #: (completed, failed) once the search has ended (they cannot change then)
    final_counts: tuple[int, int] | None = None


@dataclass(frozen=True)
class ExportRecord:
    id: str
    study: str
    trial: int
    folder: Path

    def files(self) -> list[str]:
        return sorted(p.name for p in self.folder.iterdir() if p.is_file())


class Jobs:
    """The searches and exports of one replica."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.searches: dict[str, SearchJob] = {}
        self._lock = threading.Lock()
        self._export_locks: dict[str, threading.Lock] = {}
        settings.exports_root.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ searches
    def prepare(self, raw: dict[str, Any]) -> SearchConfig:
        """A validated :class:`~nas.search.SearchConfig` (its engine's model) for a submitted
        one, or a :class:`RequestError` naming the field before anything runs.

        The config is validated first (registered space, engine, proxy, predictor kind and
        sampler; strict types; no setting of another engine); then every path it names (the
        checkpoint, the data, and each free-text option of the proxy as the one spec parser
        reads it) must lie inside an allowed root once symlinks are resolved, and is replaced
        by its resolved form; the devices it prices must be known, and the search must pass
        the driver's own checks.
        """
        from nas.search import RaySearchConfig

        _check_request_fields(raw)
        cfg = {**raw, "storage": self.settings.search_storage, "db": self.settings.db}
        config = _validated(cfg)
        roots = self.settings.roots
        updates: dict[str, Any] = {}
        if config.checkpoint is not None:
            updates["checkpoint"] = checked_path(config.checkpoint, roots,
                                                 ("body", "checkpoint"))
        if config.data is not None and config.data not in _BUILTIN_DATA:
            updates["data"] = checked_path(config.data, roots, ("body", "data"))
        proxy = _checked_proxy(config.proxy, roots)
        if proxy != config.proxy:
            updates["proxy"] = proxy
        config = _validated({**config.model_dump(exclude_unset=True), **updates})
        _check_devices(config)
        from nas.search import check_config

        try:
            check_config(config)
        except NASError as exc:
            raise RequestError(("body",), _one_line(exc)) from None
        if not isinstance(config, RaySearchConfig):
            return config
        try:
            import ray

            cpus = int(ray.cluster_resources().get("CPU", 1))
        except Exception:  # Ray not reachable: the search itself will say so
            cpus = config.workers * config.worker_threads
        if config.workers * config.worker_threads > max(1, cpus):
            raise RequestError(("body", "workers"), f"workers x worker_threads = "
                               f"{config.workers * config.worker_threads} is more than the "
                               f"{cpus} CPUs of this service's Ray cluster")
        return config

    def submit(self, raw: dict[str, Any]) -> SearchJob:
        """Check a config and start its search in a background thread.

        Raises:
            RequestError: a refused field (422), a study name in use (409), too many
                searches running (429).
        """
        from nas.search import open_storage

        job_id = secrets.token_hex(8)
        raw = dict(raw)
        raw.setdefault("study", None)
        if raw["study"] is None:
            raw["study"] = f"search-{job_id}"
        config = self.prepare(raw)
        import optuna

        storage = open_storage(config.storage_url)
        names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
        with self._lock:
            running = [j for j in self.searches.values() if j.status in ("pending", "running")]
            if len(running) >= self.settings.max_searches:
                raise RequestError(("body",), f"{len(running)} searches are running, the most "
                                   "this service runs at once; retry later", status=429)
            taken = names | {j.config.study_name for j in self.searches.values()}
            if config.study_name in taken:
                raise RequestError(("body", "study"), f"study {config.study_name!r} exists "
                                   "already; choose another name", status=409)
            job = SearchJob(id=job_id, config=config)
            self.searches[job_id] = job
        job.thread = threading.Thread(target=self._run, args=(job,), daemon=True,
                                      name=f"search-{job_id}")
        job.thread.start()
        return job

    def _run(self, job: SearchJob) -> None:
        from nas.search import run_search

        def on_start(*_: Any) -> None:  # the checks passed: the search itself starts
            with self._lock:
                if job.status == "pending":
                    job.status = "running"

        try:
            run_search(job.config, progress=False, stop=job.stop, on_start=on_start)
        except Exception as exc:
            job.error = _one_line(exc)
            end = "failed"
        else:
            end = "cancelled" if job.stop.is_set() else "completed"
        with contextlib.suppress(Exception):  # counted once, while nothing else writes
            job.final_counts = counts(self.results(job))
        with self._lock:
            job.status = end

    def counts(self, job: SearchJob) -> tuple[int, int]:
        """Trials completed and failed of ``job``, from its study (as its status says)."""
        if job.final_counts is not None:
            return job.final_counts
        return counts(self.results(job))

    def get(self, job_id: str) -> SearchJob:
        check_id(job_id, "search")
        job = self.searches.get(job_id)
        if job is None:
            raise RequestError(("path", "search_id"), f"no search {job_id}", status=404)
        return job

    def cancel(self, job_id: str) -> SearchJob:
        job = self.get(job_id)
        with self._lock:
            if job.status in ("pending", "running"):
                job.stop.set()
                job.status = "cancelling"
        return job

    def results(self, job: SearchJob) -> Any:
        """The stored :class:`~nas.search.SearchResult`, or None before the first trial."""
        from nas.search import load_results

        for attempt in range(3):
            try:
                return load_results(job.config.study_name, job.config.storage_url)
            except ConfigError:  # the study is not written yet
                return None
            except Exception:  # the running search holds a write lock on the storage
                if attempt == 2:
                    raise
                time.sleep(0.2 * (attempt + 1))
        return None

    # ------------------------------------------------------------------ exports
    def _study_storage(self, study: str) -> str:
        """The service's storage, if ``study`` is in it (a 404 naming the studies if not)."""
        import optuna

        from nas.search import open_storage

        url = self.settings.search_storage
        names = sorted(s.study_name for s in optuna.get_all_study_summaries(open_storage(url)))
        if study not in names:
            raise RequestError(("body", "study"), f"no study {study!r} in this service's "
                               f"storage; studies there: {', '.join(names[:20]) or 'none'}",
                               status=404)
        return url

    def export(self, study: str, trial: int) -> ExportRecord:
        """Export one trial of a study in the service's storage (or return the export made
        earlier); verified by ``export_subnet`` before it is kept."""
        from nas.search import export_trials

        digest = hashlib.sha256(f"{study}\0{trial}".encode()).hexdigest()[:16]
        folder = self.settings.exports_root / digest
        with self._lock:
            lock = self._export_locks.setdefault(digest, threading.Lock())
        with lock:
            if (folder / "manifest.json").is_file():
                return ExportRecord(digest, study, trial, folder)
            tmp = self.settings.exports_root / f".{digest}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                written = export_trials(study, self._study_storage(study), tmp, trials=[trial],
                                        progress=False)
                shutil.rmtree(folder, ignore_errors=True)
                written[0].rename(folder)
            except ConfigError as exc:
                msg = str(exc)
                status = 404 if "no study" in msg or "is not in study" in msg else 422
                raise RequestError(("body",), msg, status=status) from None
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return ExportRecord(digest, study, trial, folder)

    def export_record(self, export_id: str) -> ExportRecord:
        check_id(export_id, "export")
        folder = self.settings.exports_root / export_id
        manifest = folder / "manifest.json"
        if not manifest.is_file():
            raise RequestError(("path", "export_id"), f"no export {export_id}", status=404)
        import json

        search = json.loads(manifest.read_text()).get("extra", {}).get("search", {})
        return ExportRecord(export_id, str(search.get("study", "")),
                            int(search.get("trial", -1)), folder)

    def export_file(self, export_id: str, name: str) -> Path:
        """The path of file ``name`` of an export: only a plain file directly in the export's
        folder, never through a link."""
        rec = self.export_record(export_id)
        if not _FILE_RE.match(name) or name not in rec.files():
            raise RequestError(("path", "file"), f"export {export_id} has no file {name!r}; "
                               f"it has {', '.join(rec.files())}", status=404)
        path = rec.folder / name
        if path.is_symlink() or path.resolve().parent != rec.folder.resolve():
            raise RequestError(("path", "file"), f"no file {name!r}", status=404)
        return path
