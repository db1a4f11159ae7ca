"""Accuracy metrics of latency predictors: errors, share within a tolerance, rank agreement."""

from __future__ import annotations

from typing import Any

import numpy as np

from nas.errors import NASError

__all__ = ["METRIC_NAMES", "regression_metrics"]

METRIC_NAMES = ("rmse_ms", "mape", "within_5", "within_10", "kendall_tau", "spearman_rho")


def regression_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    """How well ``y_pred`` matches measured latencies ``y_true`` (both in ms).

    Returns:
        ``rmse_ms``; ``mape`` (mean absolute relative error, a fraction: 0.025 is 2.5%);
        ``within_5`` and ``within_10`` (share of predictions within +-5% / +-10% of the
        measurement); ``kendall_tau`` and ``spearman_rho`` (rank agreement, what a search
        that compares architectures needs); and ``n``.

    Raises:
        NASError: if the arrays differ in length or hold fewer than two values.
    """
    from scipy import stats

    t = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    if t.shape != p.shape:
        raise NASError(f"y_true and y_pred must have the same length, got {len(t)} and {len(p)}")
    if len(t) < 2:
        raise NASError(f"metrics need at least 2 measurements, got {len(t)}")
    rel = np.abs(p - t) / np.abs(t)
    tau = stats.kendalltau(t, p).statistic
    rho = stats.spearmanr(t, p).statistic
    return {
        "n": float(len(t)),
        "rmse_ms": float(np.sqrt(np.mean((p - t) ** 2))),
        "mape": float(np.mean(rel)),
        "within_5": float(np.mean(rel <= 0.05)),
        "within_10": float(np.mean(rel <= 0.10)),
        "kendall_tau": float(tau) if np.isfinite(tau) else 0.0,
        "spearman_rho": float(rho) if np.isfinite(rho) else 0.0,
    }
