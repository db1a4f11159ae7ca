"""Architecture features for latency predictors, vectorised as per-layer lookup tables.

In a once-for-all MobileNetV3 space the first layer of every stage always runs, so the
spatial size at every layer slot depends on the input resolution only. Every per-layer
quantity (MACs of the 1x1 expand, of the depthwise kxk and of the 1x1 projection, activation
elements written, squeeze-excite work, operator count) is therefore a function of
``(resolution, slot, kernel, expand)``: a table of shape ``(R, L, K, E, F)`` computed once
per space. The features of a batch are gathers from it summed over the layer slots, plus the
parts that depend on the resolution alone (stem, first block, head): numpy over
:class:`~nas.space.ArchArrays`, no Python loop over architectures.

Any model linear in these features is itself such a table: its prediction is a sum over
layers of ``W[r, slot, k, e]`` (what :meth:`LayerFeatures.gather_sum` computes), i.e. a
learned lookup table.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

import numpy as np

from nas.errors import ArchitectureError
from nas.space import ArchArrays, Architecture, SearchSpace, get_space

__all__ = ["ArchLike", "LayerFeatures", "as_arrays", "layer_features"]

ArchLike = Iterable[Architecture | dict[str, Any] | str] | ArchArrays


def _off_grid(r: np.ndarray, resolutions: Any) -> np.ndarray:
    """Which of ``r`` are not among the (sorted) ``resolutions``: ``~np.isin``, without its
    setup cost on a single architecture."""
    grid = np.asarray(resolutions)
    pos = np.minimum(np.searchsorted(grid, r), len(grid) - 1)
    return np.asarray(grid[pos] != r)


def as_arrays(space: SearchSpace, X: ArchLike) -> ArchArrays:
    """``X`` (architectures, OFA dicts, JSON strings or ``ArchArrays``) as validated arrays.

    Raises:
        ArchitectureError: an architecture of another space, or arrays with values the space
            does not allow.
    """
    if isinstance(X, ArchArrays):
        n_layers, n_stages = space.n_layers, space.n_stages
        if X.ks.shape[1:] != (n_layers,) or X.e.shape[1:] != (n_layers,) or \
                X.d.shape[1:] != (n_stages,):
            raise ArchitectureError(
                f"ArchArrays must have ks and e of shape (n, {n_layers}) and d of shape "
                f"(n, {n_stages}) for space {space.name}; got {X.ks.shape}, {X.e.shape}, "
                f"{X.d.shape}"
            )
        bad = _off_grid(X.r, space.resolutions)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ArchitectureError(
                f"r must be one of the resolutions of space {space.name}, got {X.r[i]!r} "
                f"at row {i}"
            )
        return X
    if isinstance(X, Architecture):
        X = [X]
    archs = []
    for i, a in enumerate(X):
        if isinstance(a, Architecture):
            if a.space != space.name:
                raise ArchitectureError(
                    f"architecture {i} belongs to space {a.space!r}, not {space.name!r}"
                )
            archs.append(a)
        else:
            archs.append(space.parse(a))
    arrays = space.to_arrays(archs)
    off = _off_grid(arrays.r, space.resolutions)
    if off.any():  # a deployment resolution (parse(off_grid=True)): no table row for it
        i = int(np.flatnonzero(off)[0])
        raise ArchitectureError(
            f"r = {int(arrays.r[i])} is off the search grid of space {space.name} (row {i}); "
            f"latency predictors price its resolutions only")
    return arrays


#: at most this many gathered values (architectures x slots x columns), one ``take`` of them
#: all (a prediction: a few microseconds where the per-slot loop spends one pass per slot)
_ONE_TAKE = 2_000_000


@dataclass(frozen=True)
class LayerFeatures:
    """Per-layer feature tables of a space.

    Attributes:
        space: the space's name.
        names: feature names, ``(F,)``.
        layer: ``(R, L, K, E, F)`` per-layer features by resolution index, slot, kernel index
            and expand index.
        fixed: ``(R, F)`` features of the stem, first block and head (which depend on the
            resolution alone).
        resolutions, kernel_sizes, expand_ratios: the space's choices, in table order.
        hw_in: ``(R, L)`` input side of every slot at every resolution.
        groups: for each feature name, its group (``"aggregate"`` features are sums over the
            network of one kind of work; ``"stage"`` and ``"slot"`` ones split them by stage
            and by layer slot).
        macs_layer: ``(R, L, K, E)`` MACs (millions) of each layer.
        macs_fixed: ``(R,)`` MACs (millions) of the stem, first block and head.
    """

    space: str
    names: tuple[str, ...]
    layer: np.ndarray
    fixed: np.ndarray
    resolutions: np.ndarray
    kernel_sizes: np.ndarray
    expand_ratios: np.ndarray
    hw_in: np.ndarray
    groups: tuple[str, ...]
    macs_layer: np.ndarray
    macs_fixed: np.ndarray

    @property
    def n_features(self) -> int:
        return len(self.names)

    def indices(self, a: ArchArrays) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Resolution, kernel and expand indices into the tables, and the active mask."""
        r_idx = np.searchsorted(self.resolutions, a.r)
        kmap, emap = self._choice_maps
        active = a.ks > 0
        return r_idx, kmap[a.ks], emap[a.e], active

    @cached_property
    def _choice_maps(self) -> tuple[np.ndarray, np.ndarray]:
        """Kernel size and expand ratio to their table index (0 for 0, a slot that does not
        run), made once rather than at every prediction."""
        kmap = np.zeros(int(self.kernel_sizes.max()) + 1, dtype=np.intp)
        kmap[self.kernel_sizes] = np.arange(len(self.kernel_sizes))
        emap = np.zeros(int(self.expand_ratios.max()) + 1, dtype=np.intp)
        emap[self.expand_ratios] = np.arange(len(self.expand_ratios))
        return kmap, emap

    def gather_sum(self, table: np.ndarray, fixed: np.ndarray, a: ArchArrays) -> np.ndarray:
        """``fixed[r] + sum over active slots of table[r, slot, k, e]`` for every row.

        ``table`` is ``(R, L, K, E, ...)`` and ``fixed`` ``(R, ...)``; the result is
        ``(n, ...)``. Per slot, one ``take`` of whole rows from that slot's sub-table,
        restricted to the trailing columns the slot can make non-zero (a stage's features
        are zero at the other stages' slots) and with an appended zero row for inactive
        slots: a few memory passes of ``n x columns``, whatever ``L``.
        """
        r_idx, k_idx, e_idx, active = self.indices(a)
        n = len(r_idx)
        n_r, n_l, n_k, n_e = table.shape[:4]
        trailing = table.shape[4:]
        fixed2 = np.asarray(fixed, dtype=np.float64).reshape(n_r, -1)
        n_f = fixed2.shape[1]
        if n * n_l * n_f <= _ONE_TAKE:  # a prediction's few columns: one take of them all
            rows = n_r * n_l * n_k * n_e
            slot = ((r_idx[:, None] * n_l + np.arange(n_l)) * n_k + k_idx) * n_e + e_idx
            if table.size <= slot.size * n_f:  # a zero row for the slots that do not run
                flat = np.concatenate([table.reshape(rows, n_f), np.zeros((1, n_f))])
                picked = np.take(flat, np.where(active, slot, rows), axis=0)  # (n, L, F)
            else:  # a table larger than what is gathered (megabytes: many columns, few
                # architectures): not copied, the slots that do not run zeroed after
                picked = np.take(table.reshape(rows, n_f), slot, axis=0)
                picked[~active] = 0.0
            return (fixed2[r_idx] + picked.sum(axis=1)).reshape(n, *trailing)
        out = fixed2[r_idx]  # (n, F), a new array
        per_slot = n_r * n_k * n_e
        base = r_idx * (n_k * n_e)
        for j in range(n_l):
            sub = table[:, j].reshape(per_slot, n_f)
            cols = np.flatnonzero(np.any(sub != 0, axis=0))
            if len(cols) == 0:
                continue
            idx = np.where(active[:, j], base + k_idx[:, j] * n_e + e_idx[:, j], per_slot)
            # contiguous runs of columns: slice adds, not strided fancy indexing
            for run in np.split(cols, np.flatnonzero(np.diff(cols) != 1) + 1):
                lo, hi = int(run[0]), int(run[-1]) + 1
                padded = np.concatenate([sub[:, lo:hi], np.zeros((1, hi - lo))])
                out[:, lo:hi] += np.take(padded, idx, axis=0)
        return out.reshape(n, *trailing)

    def transform(self, a: ArchArrays) -> np.ndarray:
        """The ``(n, F)`` feature matrix."""
        return self.gather_sum(self.layer, self.fixed, a)

    def macs(self, a: ArchArrays) -> np.ndarray:
        """MACs in millions, ``(n,)`` (the same as ``SearchSpace.costs``, faster)."""
        return self.gather_sum(self.macs_layer, self.macs_fixed, a)


def _conv_out(size: np.ndarray | int, stride: int) -> np.ndarray:
    return (np.asarray(size, dtype=np.int64) - 1) // stride + 1


@dataclass
class _Columns:
    """Feature names, their groups, and the column of each kind of work (overall, per
    stage, per slot)."""

    names: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    agg: dict[str, int] = field(default_factory=dict)
    dw: dict[int, int] = field(default_factory=dict)
    stage: list[dict[str, int]] = field(default_factory=list)
    stage_dw: list[dict[int, int]] = field(default_factory=list)
    slot_dw: list[int] = field(default_factory=list)
    slot_pw: list[int] = field(default_factory=list)

    def add(self, name: str, group: str) -> int:
        self.names.append(name)
        self.groups.append(group)
        return len(self.names) - 1


def _columns(sp: SearchSpace, ks: np.ndarray) -> _Columns:
    c = _Columns()
    # Aggregates: one coefficient per kind of work, shared by every layer.
    c.agg["pw"] = c.add("pw_macs", "aggregate")
    c.dw = {int(k): c.add(f"dw{k}_macs", "aggregate") for k in ks}
    for key, name in (("act", "act_elems"), ("se", "se_elems"), ("ops", "layers"),
                      ("stem", "stem_area"), ("head", "head_area"), ("one", "const")):
        c.agg[key] = c.add(name, "aggregate")
    # Stage splits: how the cost of the same work differs with the tensor shapes of a stage.
    # (stage-major, so that the features a slot can touch are two contiguous runs; every
    # stage of the spec, a fixed-depth last one included)
    for s in range(len(sp.spec.stages)):
        cols = {"exp": c.add(f"s{s}_expand_macs", "stage"),
                "proj": c.add(f"s{s}_project_macs", "stage")}
        c.stage_dw.append({int(k): c.add(f"s{s}_dw{k}_macs", "stage") for k in ks})
        cols["act"] = c.add(f"s{s}_act_elems", "stage")
        cols["ops"] = c.add(f"s{s}_layers", "stage")
        cols["se"] = c.add(f"s{s}_se_elems", "stage") if sp.spec.stages[s].se else -1
        c.stage.append(cols)
    # Position splits: the same, per layer slot (a learned per-slot lookup table).
    c.slot_dw = [c.add(f"l{j}_dw_macs", "slot") for j in range(sp.n_layers)]
    c.slot_pw = [c.add(f"l{j}_pw_macs", "slot") for j in range(sp.n_layers)]
    return c


def _fill_layer(f: np.ndarray, c: _Columns, s: int, j: int, k: int,
                work: dict[str, Any], se: bool) -> None:
    """Write one layer's work (per resolution) into its feature row ``f`` ``(R, F)``."""
    pw = work["exp"] + work["proj"]
    st = c.stage[s]
    f[:, c.agg["pw"]] = pw
    f[:, c.dw[k]] = work["dw"]
    f[:, c.agg["act"]] = work["act"]
    f[:, c.agg["se"]] = work["se"]
    f[:, c.agg["ops"]] = 1.0
    f[:, st["exp"]] = work["exp"]
    f[:, st["proj"]] = work["proj"]
    f[:, c.stage_dw[s][k]] = work["dw"]
    f[:, st["act"]] = work["act"]
    f[:, st["ops"]] = 1.0
    if se:
        f[:, st["se"]] = work["se"]
    f[:, c.slot_dw[j]] = work["dw"]
    f[:, c.slot_pw[j]] = pw


@lru_cache(maxsize=16)
def _layer_features(space_name: str) -> LayerFeatures:
    sp = get_space(space_name)
    spec = sp.spec
    res = np.asarray(sp.resolutions, dtype=np.int64)
    ks = np.asarray(sp.kernel_sizes, dtype=np.int64)
    es = np.asarray(sp.expand_ratios, dtype=np.int64)
    c = _columns(sp, ks)
    n_f = len(c.names)
    n_r, n_l = len(res), sp.n_layers
    layer = np.zeros((n_r, n_l, len(ks), len(es), n_f))
    macs_layer = np.zeros((n_r, n_l, len(ks), len(es)))
    fixed = np.zeros((n_r, n_f))
    hw_in_all = np.zeros((n_r, n_l), dtype=np.int64)
    scale = 1e-6  # MACs and elements in millions keep the solvers well conditioned
    hw0 = _conv_out(res, spec.stem.stride)
    stage_in = _conv_out(hw0, spec.first_block.stride)
    plan = sp.layer_plan
    for j, (s, i, cin, cout, stride, se) in enumerate(plan):
        if i == 0:
            stage_out = _conv_out(stage_in, stride)
        hw = stage_in if i == 0 else stage_out
        hw_out = stage_out
        hw_in_all[:, j] = hw
        for ki, k in enumerate(ks):
            for ei, e in enumerate(es):
                mid = sp.mid_channels(cin, int(e))
                work = {
                    "exp": hw**2 * cin * mid * scale,
                    "proj": hw_out**2 * mid * cout * scale,
                    "dw": hw_out**2 * mid * k * k * scale,
                    "act": (hw**2 * mid + hw_out**2 * mid + hw_out**2 * cout) * scale,
                    "se": hw_out**2 * mid * scale if se else 0.0,
                }
                se_macs = 2 * mid * sp.se_channels(mid) * scale if se else 0.0
                macs_layer[:, j, ki, ei] = work["exp"] + work["proj"] + work["dw"] + se_macs
                _fill_layer(layer[:, j, ki, ei], c, s, j, int(k), work, se)
        if j + 1 == len(plan) or plan[j + 1][1] == 0:  # the stage's last slot
            stage_in = stage_out
    fixed[:, c.agg["stem"]] = hw0**2 * scale
    fixed[:, c.agg["head"]] = stage_in**2 * scale
    fixed[:, c.agg["one"]] = 1.0
    small = sp.to_arrays([sp.smallest(int(r)) for r in res])
    costs = sp.costs(small)
    macs_fixed = (costs["macs"] - costs["stage_macs"].sum(1)) * scale
    for arr in (layer, fixed, macs_layer, macs_fixed, hw_in_all):
        arr.setflags(write=False)  # shared by every predictor of the space
    return LayerFeatures(
        space=sp.name, names=tuple(c.names), layer=layer, fixed=fixed, resolutions=res,
        kernel_sizes=ks, expand_ratios=es, hw_in=hw_in_all, groups=tuple(c.groups),
        macs_layer=macs_layer, macs_fixed=macs_fixed,
    )


def layer_features(space: str | SearchSpace) -> LayerFeatures:
    """The feature tables of ``space`` (computed once per process)."""
    return _layer_features(get_space(space).name)


def feature_columns(lf: LayerFeatures, groups: Sequence[str]) -> np.ndarray:
    """Indices of the features in ``groups``."""
    return np.asarray([i for i, g in enumerate(lf.groups) if g in groups], dtype=np.intp)
