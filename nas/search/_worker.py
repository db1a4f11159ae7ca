"""Evaluating architectures: accuracy proxy, predicted latencies, MACs and params.

An :class:`Evaluator` loads the supernet, the data and the predictors once and scores
architectures in batches. The search runs several of them as Ray actors; the same class runs
in-process for tests and for scoring large samples.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from collections.abc import Sequence
from typing import Any

import numpy as np

from nas.errors import NASError
from nas.search._config import SearchConfig, is_memory, memory_mib
from nas.space import get_space

__all__ = ["Evaluator", "error_line", "peak_rss_mb"]


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def error_line(exc: BaseException) -> str:
    """One line saying what went wrong (type and message, no traceback)."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}"[:500]


class Evaluator:
    """Scores architectures for one search.

    Args:
        config: the search's configuration (as a dict, so it crosses process boundaries).
        predictors: fitted latency predictors per device.
        threads: torch threads for the accuracy proxy.
    """

    def __init__(self, config: dict[str, Any], predictors: dict[str, Any],
                 threads: int = 1) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.cfg = SearchConfig.model_validate(config)
        self.space = get_space(self.cfg.space)
        self.predictors = dict(predictors)
        keys = [*self.cfg.objectives, *self.cfg.constraints]
        self.memory = list(dict.fromkeys(k for k in keys if is_memory(k)))
        self.proxy = None
        self.ctx = None
        if "accuracy" in self.cfg.objectives:
            from nas.proxies import ProxyContext, get_proxy

            self.proxy = get_proxy(self.cfg.proxy)
            opts = dict(self.cfg.proxy_options)
            # scores are cached per (checkpoint, proxy, subnet) unless proxy_options say
            # cache: false (e.g. to time evaluations)
            cache = bool(opts.pop("cache", True)) and bool(self.proxy.cacheable)
            # load only what the proxy uses (a saved predictor needs neither)
            self.ctx = ProxyContext.build(
                self.space,
                checkpoint=self.cfg.checkpoint if self.proxy.uses_weights() else None,
                data=self.cfg.data if self.proxy.needs_data else None, cache=cache, **opts,
            )

    def info(self) -> dict[str, Any]:
        """Where this evaluator runs (process id, host), its peak memory and CPU seconds so
        far, and the torch threads it scores with."""
        import torch

        cpu = os.times()
        return {"pid": os.getpid(), "host": socket.gethostname(),
                "peak_rss_mb": round(peak_rss_mb(), 1),
                "cpu_s": round(cpu.user + cpu.system, 3),
                "torch_threads": torch.get_num_threads()}

    def evaluate(self, archs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """One result per architecture: ``accuracy`` (if an objective), ``latency_ms`` per
        device, ``macs``, ``params``, ``memory_mib`` per memory key (a search with memory),
        ``eval_s``; or ``error`` (one line) when that
        architecture could not be evaluated. Never raises for a bad architecture."""
        t0 = time.perf_counter()
        parsed: list[Any] = []
        out: list[dict[str, Any]] = []
        for a in archs:
            try:
                parsed.append(self.space.parse(a))
                out.append({})
            except NASError as exc:
                parsed.append(None)
                out.append({"error": error_line(exc)})
        ok = [i for i, a in enumerate(parsed) if a is not None]
        good = [parsed[i] for i in ok]
        if good:
            try:
                self._score(good, [out[i] for i in ok])
            except Exception:
                for i in ok:
                    try:
                        out[i] = {}
                        self._score([parsed[i]], [out[i]])  # type: ignore[list-item]
                    except Exception as exc:
                        out[i] = {"error": error_line(exc),
                                  "traceback": traceback.format_exc(limit=3)[-2000:]}
        per = (time.perf_counter() - t0) / max(1, len(archs))
        for r in out:
            r["eval_s"] = per
            r["pid"] = os.getpid()
        return out

    def _score(self, archs: Sequence[Any], into: list[dict[str, Any]]) -> None:
        costs = self.space.costs(archs)
        mem = {key: memory_mib(self.space, archs, key) for key in self.memory}
        lat = {dev: np.asarray(p.predict(list(archs)), dtype=np.float64)
               for dev, p in self.predictors.items()}
        acc = None
        if self.proxy is not None:
            acc = self.proxy.score(list(archs), self.ctx)  # type: ignore[arg-type]
        for i, r in enumerate(into):
            r["macs"] = int(costs["macs"][i])
            r["params"] = int(costs["params"][i])
            if mem:
                r["memory_mib"] = {key: float(v[i]) for key, v in mem.items()}
            r["latency_ms"] = {d: float(v[i]) for d, v in lat.items()}
            if acc is not None:
                r["accuracy"] = float(acc[i])
            bad = [k for k, v in [("accuracy", r.get("accuracy", 0.0)),
                                  *((f"latency:{d}", v) for d, v in r["latency_ms"].items())]
                   if not np.isfinite(v)]
            if bad:
                raise NASError(f"non-finite {', '.join(bad)}")
