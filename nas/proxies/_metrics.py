"""Rank agreement between proxy scores and accuracy, with bootstrap intervals."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from nas.errors import NASError

__all__ = ["bootstrap_ci", "kendall_tau", "rank_metrics", "spearman_rho", "tau_by_bins"]


def _pair(y: Any, s: Any) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(y, dtype=np.float64).ravel()
    b = np.asarray(s, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise NASError(f"accuracies and scores differ in length: {len(a)} and {len(b)}")
    return a, b


def kendall_tau(y: Any, s: Any) -> float:
    """Kendall's tau-b (0.0 when undefined, e.g. a constant score)."""
    from scipy import stats

    a, b = _pair(y, s)
    if len(a) < 2:
        return 0.0
    t = stats.kendalltau(a, b).statistic
    return float(t) if np.isfinite(t) else 0.0


def spearman_rho(y: Any, s: Any) -> float:
    """Spearman's rank correlation (0.0 when undefined)."""
    from scipy import stats

    a, b = _pair(y, s)
    if len(a) < 2:
        return 0.0
    r = stats.spearmanr(a, b).statistic
    return float(r) if np.isfinite(r) else 0.0


def rank_metrics(y: Any, s: Any) -> dict[str, float]:
    """``kendall_tau``, ``spearman_rho`` and ``n`` of scores ``s`` against accuracies ``y``."""
    a, b = _pair(y, s)
    return {"n": float(len(a)), "kendall_tau": kendall_tau(a, b),
            "spearman_rho": spearman_rho(a, b)}


def bootstrap_ci(
    y: Any, s: Any, fn: Callable[[np.ndarray, np.ndarray], float] = kendall_tau,
    n_boot: int = 1000, level: float = 0.95, seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``fn(y, s)``, resampling (y, s) pairs."""
    a, b = _pair(y, s)
    rng = np.random.default_rng(seed)
    vals = np.empty(n_boot)
    for i in range(n_boot):
        idx = rng.integers(0, len(a), len(a))
        vals[i] = fn(a[idx], b[idx])
    lo, hi = np.quantile(vals, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def tau_by_bins(y: Any, s: Any, macs: Any, n_bins: int = 4) -> list[dict[str, float]]:
    """Kendall's tau within MAC quantile bins: does a proxy rank beyond model size?"""
    a, b = _pair(y, s)
    m = np.asarray(macs, dtype=np.float64).ravel()
    edges = np.quantile(m, np.linspace(0, 1, n_bins + 1))
    out = []
    for i in range(n_bins):
        sel = (m >= edges[i]) & ((m <= edges[i + 1]) if i == n_bins - 1 else (m < edges[i + 1]))
        out.append({"bin": float(i), "macs_lo": float(edges[i]), "macs_hi": float(edges[i + 1]),
                    "n": float(sel.sum()), "kendall_tau": kendall_tau(a[sel], b[sel])})
    return out
