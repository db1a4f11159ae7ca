"""Pareto fronts and hypervolume of objective values (all minimised).

Optuna's hypervolume (``optuna._hypervolume``) is private, so the exact computation is here:
a vectorised sweep in two dimensions and, above, slicing along the last objective (each slab
between two consecutive values is a box over the hypervolume of the points below it in one
dimension fewer). That is O(n^(m-1) log n) for n front points and m objectives: instant for
the two or three objectives a search has.
"""

from __future__ import annotations

import numpy as np

__all__ = ["hypervolume", "pareto_mask"]


def pareto_mask(values: np.ndarray) -> np.ndarray:
    """True for rows of ``values`` (n x m, minimised) that no other row dominates.

    Rows are visited in lexicographic order: a row can only be dominated by one before it,
    and if by any, then by one on the front found so far (dominance is transitive), so each
    row is compared with the current front only: memory O(n), time O(n x front), where the
    pairwise comparison of all rows would need n^2 memory (80 GB for 100,000 points).
    """
    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    mask = np.zeros(n, dtype=bool)
    if n == 0:
        return mask
    front = np.empty((0, v.shape[1]))
    for i in np.lexsort(v.T[::-1]):
        p = v[i]
        if len(front) and bool(np.any(np.all(front <= p, axis=1)
                                      & np.any(front < p, axis=1))):
            continue
        mask[i] = True
        front = np.vstack([front, p])
    return mask


def hypervolume(values: np.ndarray, reference: np.ndarray) -> float:
    """Hypervolume dominated by ``values`` (n x m, minimised) up to ``reference``.

    Points not strictly better than the reference in every objective add nothing.
    """
    v = np.asarray(values, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if v.size == 0:
        return 0.0
    v = v[np.all(v < ref, axis=1)]
    if len(v) == 0:
        return 0.0
    if v.shape[1] > 2:
        v = v[pareto_mask(v)]  # dominated points add nothing; fewer slabs
    return float(_hv(v, ref))


def _hv(v: np.ndarray, ref: np.ndarray) -> float:
    """Exact hypervolume of points all strictly inside ``ref``."""
    m = v.shape[1]
    if m == 1:
        return float(ref[0] - v[:, 0].min())
    if m == 2:
        # sorted by x: each point adds the strip between its y and the best y before it
        v = v[np.lexsort((v[:, 1], v[:, 0]))]
        best_before = np.minimum.accumulate(np.concatenate([[ref[1]], v[:-1, 1]]))
        gain = np.clip(best_before - v[:, 1], 0.0, None)
        return float(np.sum((ref[0] - v[:, 0]) * gain))
    v = v[np.argsort(v[:, -1], kind="stable")]
    z = np.append(v[:, -1], ref[-1])
    total = 0.0
    for k in range(len(v)):
        depth = z[k + 1] - z[k]
        if depth > 0:  # the slab [z_k, z_k+1) is covered by the first k+1 points
            total += depth * _hv(v[: k + 1, :-1], ref[:-1])
    return total
