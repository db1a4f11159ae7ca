"""Latency from a lookup table measured elsewhere, summed as it is: the ``table`` kind.

Once-for-All publishes latency lookup tables measured on a Samsung Galaxy Note10
(``han-cai/files``, folder ``ofa/note10/``, MIT licence with OFA's code), one YAML file per
input resolution (``{160,176,192,208,224}_lookup_table.yaml``): for every block
configuration, keyed like
``expanded_conv-input:112x112x24-output:56x56x32-expand:144-kernel:3-stride:2-idskip:0-se:0-hs:0``,
and for ``Conv`` (stem), ``Conv_1`` (final expand), ``AvgPool2D``, ``Conv_2`` (feature mix) and
``Logits``, the mean latency in ms. OFA's ``LatencyTable`` prices a subnet as the sum of the
entries of its stem, blocks and head at its resolution; so does :class:`TablePredictor`, in
one vectorised gather, at the table's resolutions only (nothing is interpolated, calibrated or
timed here).

The table's keys name the channels of the network that was timed (``keyed_by``): OFA's Note10
tables are keyed by the width-1.2 network (``ofa_mbv3_w12``: stem 24, widths 32..192, head
1152/1536). A subnet of another space with the same choices (``ofa_mbv3``) is priced by its
counterpart in that network, which is what OFA's ``LatencyTable`` does with any
``{ks, e, d, r}`` (OFA's tutorial pairs it with the w1.0 accuracy predictor); such a price
ranks subnets, and overstates a w1.0 subnet's own latency.

:func:`import_lut` converts anyone's folder of tables in OFA's format for a device and space
and stores it in the latency database; the package ships OFA's Note10 tables converted
(``nas/_data/tables/note10.json``, the ``note10`` device), which :func:`shipped_table` finds
when the database has no predictor for a device.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from nas._io import atomic_write, read_text, read_yaml, sha256_file
from nas.devices import DeviceProfile, get_device
from nas.errors import ArchitectureError, ConfigError
from nas.latency._lut import lut_to_arrays
from nas.latency._predictors import PREDICTORS, LatencyPredictor
from nas.space import ArchArrays, SearchSpace, get_space, list_spaces

if TYPE_CHECKING:
    from nas.db import LatencyDB

__all__ = [
    "OFA_TABLE_FORMAT",
    "TablePredictor",
    "import_lut",
    "ofa_table_keys",
    "read_ofa_lut",
    "shipped_table",
    "shipped_table_path",
]

OFA_TABLE_FORMAT = "nas.ofa_lut/1"
_SHIPPED = Path(__file__).resolve().parents[1] / "_data" / "tables"
_FILE_RE = re.compile(r"^(\d+)_lookup_table\.yaml$")
#: provenance of OFA's Note10 tables (stated in the shipped file)
OFA_NOTE10_PROVENANCE = {
    "source": "https://github.com/han-cai/files/tree/master/ofa/note10",
    "authors": "Han Cai, Chuang Gan, Tianzhe Wang, Zhekai Zhang, Song Han: Once-for-All: "
               "Train One Network and Specialize it for Efficient Deployment, ICLR 2020",
    "code": "https://github.com/mit-han-lab/once-for-all",
    "license": "MIT (Once-for-All)",
    "measured": "Samsung Galaxy Note10, batch 1, mean ms over `count` runs per entry",
}


# ---------------------------------------------------------------------- OFA's keys
def _shape(*dims: int) -> str:
    return "x".join(str(d) for d in dims)


def ofa_table_keys(space: str | SearchSpace, r: int) -> tuple[list[str], list[list[list[str]]]]:
    """The keys OFA's ``LatencyTable`` looks up for subnets of ``space`` at resolution ``r``.

    Returns:
        ``fixed``: the stem, first block and head keys (every subnet has them), and
        ``blocks[slot][k][e]``: the key of each layer slot's block per kernel and expand index.
    """
    sp = get_space(space)
    spec = sp.spec
    hw = (r - 1) // spec.stem.stride + 1
    c0, fb = spec.stem.channels, spec.first_block
    fixed = [f"Conv-input:{_shape(r, r, 3)}-output:{_shape(hw, hw, c0)}"]
    hw_fb = (hw - 1) // fb.stride + 1
    fixed.append(_block(hw, hw_fb, c0, fb.channels, c0, fb.kernel, fb.stride, fb.se,
                        fb.act))
    hw = hw_fb
    blocks: list[list[list[str]]] = []
    for s, _i, cin, cout, stride, se in sp.layer_plan:
        hw_out = (hw - 1) // stride + 1
        act = spec.stages[s].act
        blocks.append([[_block(hw, hw_out, cin, cout, sp.mid_channels(cin, e), k, stride, se,
                               act) for e in sp.expand_ratios] for k in sp.kernel_sizes])
        hw = hw_out
    last, fe, fm = spec.stages[-1].channels, spec.head.final_expand, spec.head.feature_mix
    if fe is None:
        raise ConfigError(f"space {sp.name}: OFA's lookup tables price MobileNetV3 networks "
                          "(final expand, pooling, feature mix); this space's head differs")
    fixed += [f"Conv_1-input:{_shape(hw, hw, last)}-output:{_shape(hw, hw, fe)}",
              f"AvgPool2D-input:{_shape(hw, hw, fe)}-output:{_shape(1, 1, fe)}",
              f"Conv_2-input:{_shape(1, 1, fe)}-output:{_shape(1, 1, fm)}",
              f"Logits-input:{_shape(1, 1, fm)}-output:{spec.num_classes}"]
    return fixed, blocks


def _block(hw: int, hw_out: int, cin: int, cout: int, mid: int, k: int, stride: int,
           se: bool, act: str) -> str:
    idskip = int(stride == 1 and cin == cout)
    return (f"expanded_conv-input:{_shape(hw, hw, cin)}-output:{_shape(hw_out, hw_out, cout)}"
            f"-expand:{mid}-kernel:{k}-stride:{stride}-idskip:{idskip}-se:{int(se)}"
            f"-hs:{int(act == 'h_swish')}")


def read_ofa_lut(folder: Path | str) -> dict[int, dict[str, float]]:
    """The mean latencies (ms) of every ``{r}_lookup_table.yaml`` in ``folder``, by resolution.

    Raises:
        ConfigError: no such folder or tables, or an entry without a finite mean >= 0 (one
            line naming the file and the key).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"lookup table folder {folder} is not a folder")
    files = sorted((int(m.group(1)), p) for p in folder.iterdir()
                   if (m := _FILE_RE.match(p.name)))
    if not files:
        raise ConfigError(f"lookup table folder {folder} has no {{r}}_lookup_table.yaml files "
                          "(OFA's format, e.g. 224_lookup_table.yaml)")
    out: dict[int, dict[str, float]] = {}
    for r, path in files:
        raw = read_yaml(path, "lookup table")
        if not isinstance(raw, dict) or not raw:
            raise ConfigError(f"lookup table {path}: expected a mapping of block keys to "
                              f"{{mean, std, count}}, got {type(raw).__name__}")
        entries = {}
        for key, value in raw.items():
            mean = value.get("mean") if isinstance(value, dict) else None
            if isinstance(mean, bool) or not isinstance(mean, int | float) or \
                    not math.isfinite(mean) or mean < 0:
                raise ConfigError(f"lookup table {path}: {key!r}.mean = {mean!r}: must be a "
                                  "finite number of ms >= 0")
            entries[str(key)] = float(mean)
        out[r] = entries
    return out


def _compatible(a: SearchSpace, b: SearchSpace) -> bool:
    """Whether subnets of ``a`` have counterparts in ``b``'s network (same choices, same
    layer slots, same kind of head); only OFA spaces have lookup tables."""
    if a.family != "ofa" or b.family != "ofa":
        return False

    def shape(s: SearchSpace) -> tuple[Any, ...]:
        return (s.n_stages, s.max_depth, s.n_layers, tuple(s.kernel_sizes),
                tuple(s.expand_ratios), s.spec.head.final_expand is None)

    return shape(a) == shape(b)


def _missing(entries: dict[int, dict[str, float]], space: str) -> list[str]:
    """The keys a table lacks to price ``space``'s network, as ``'key' at r=R``."""
    out = []
    for r, table in entries.items():
        fixed, blocks = ofa_table_keys(space, r)
        out += [f"{key!r} at r={r}" for key in fixed + [k for slot in blocks for ks in slot
                                                        for k in ks] if key not in table]
    return out


def _keyed_by(entries: dict[int, dict[str, float]], space: str) -> str:
    """The space whose network the table's keys describe: ``space`` itself if they cover it,
    else another registered space with the same choices that they cover."""
    sp = get_space(space)
    candidates = [space] + [o for o in list_spaces()
                            if o != space and _compatible(sp, get_space(o))]
    missing = {c: _missing(entries, c) for c in candidates}
    for c in candidates:
        if not missing[c]:
            return c
    best = min(candidates, key=lambda c: len(missing[c]))
    raise ConfigError(f"lookup table cannot price space {space}: keyed most like space "
                      f"{best}'s network, it lacks {len(missing[best])} entries, e.g. "
                      f"{missing[best][0]}")


def ofa_table(folder: Path | str, space: str, device: str,
              **info: Any) -> dict[str, Any]:
    """OFA's tables in ``folder`` converted: the ``table`` parameter of a
    :class:`TablePredictor` for ``space`` (the entries it needs, by resolution)."""
    folder = Path(folder)
    entries = read_ofa_lut(folder)
    keyed_by = _keyed_by(entries, get_space(space).name)
    kept: dict[str, dict[str, float]] = {}
    for r, table in entries.items():
        fixed, blocks = ofa_table_keys(keyed_by, r)
        keys = fixed + [k for slot in blocks for ks in slot for k in ks]
        kept[str(r)] = {k: table[k] for k in sorted(set(keys))}
    sums = {str(r): sha256_file(folder / f"{r}_lookup_table.yaml") for r in entries}
    return {"format": OFA_TABLE_FORMAT, "device": device, "keyed_by": keyed_by,
            "resolutions": sorted(entries), "entries": kept, "sha256": sums, **info}


def _choice_index(choices: Sequence[int], values: np.ndarray) -> np.ndarray:
    """The index of each value in ``choices`` (0 for values that are not choices, e.g. the
    zeros of layers that do not run), by one gather in a small lookup array."""
    lut = np.zeros(max(choices) + 1, np.intp)
    lut[np.asarray(choices)] = np.arange(len(choices))
    return lut[np.clip(values, 0, len(lut) - 1)]  # type: ignore[no-any-return]


# ---------------------------------------------------------------------- the kind
@PREDICTORS.register
class TablePredictor(LatencyPredictor):
    """A lookup table measured elsewhere, summed as it is at its own resolutions.

    ``table`` is OFA's tables converted (:func:`ofa_table`, format ``nas.ofa_lut/1``) or a
    table of our own format (:func:`~nas.latency.build_lut`). Nothing is learned: ``fit`` only
    checks the table against the space (the measurements are not used), and a subnet at a
    resolution the table lacks is refused, naming the ones it has, unless ``interpolate``.

    **Interpolation** (``interpolate=True``, opt-in): a resolution between two of the table's
    is priced block by block, each block's entry interpolated linearly in the number of
    pixels (``r**2``) between the two neighbouring tables (a layer's work grows with its
    feature map's area), and the sums added as at a table resolution. Resolutions outside
    the table's range are still refused (that would be extrapolation). How well it does on
    OFA's Note10 tables: ``experiments/benchmarks/table_interpolation.py`` predicts the
    176 and 208 tables from their neighbours (RESULTS.md).

    Args:
        space: the space whose subnets it prices.
        table: the table (kept in the stored state).
        interpolate: price resolutions between the table's (see above).
    """

    name = "table"
    description = "a lookup table measured elsewhere (e.g. OFA's Note10), summed as it is"
    #: OFA's tables price MobileNetV3 networks of the family (``ofa_table_keys``)
    tags = frozenset({"ofa"})
    needs_table = True
    state_params = ("table",)

    def __init__(self, *, space: str = "ofa_mbv3", table: dict[str, Any] | None = None,
                 interpolate: bool = False) -> None:
        self.space = space
        self.table = table
        self.interpolate = interpolate

    @classmethod
    def check_fit(cls, profile: DeviceProfile) -> None:
        raise ConfigError(f"kind 'table' is imported, not fitted: run `nas latency import-lut "
                          f"DIR --device {profile.name} --space SPACE`")

    def _arrays(self) -> tuple[list[int], np.ndarray, np.ndarray]:
        table = self.table
        if not isinstance(table, dict):
            raise ConfigError("a TablePredictor needs table= (e.g. `nas latency import-lut`)")
        sp = get_space(self.space)
        res = [int(r) for r in table.get("resolutions", [])]
        if not res:
            raise ConfigError("table has no resolutions")
        if table.get("format") == OFA_TABLE_FORMAT:
            keyed_by = get_space(str(table["keyed_by"]))
            if not _compatible(sp, keyed_by):
                raise ConfigError(f"table is keyed by space {keyed_by.name}, whose choices "
                                  f"differ from space {sp.name}'s")
            n_k, n_e = len(sp.kernel_sizes), len(sp.expand_ratios)
            cost = np.zeros((len(res), sp.n_layers, n_k, n_e))
            fixed = np.zeros(len(res))
            for ri, r in enumerate(res):
                entries = table["entries"][str(r)]
                fkeys, blocks = ofa_table_keys(keyed_by, r)
                try:
                    fixed[ri] = sum(entries[k] for k in fkeys)
                    for j, slot in enumerate(blocks):
                        for ki, row in enumerate(slot):
                            cost[ri, j, ki] = [entries[k] for k in row]
                except KeyError as exc:
                    raise ConfigError(f"table lacks entry {exc.args[0]!r} at r={r}") from None
            return res, cost, fixed
        cost, fixed = lut_to_arrays(table, sp)  # our own format, on the space's grid
        idx = np.searchsorted(sp.resolutions, res)
        return res, cost[idx], fixed[idx]

    def _fit(self, a: ArchArrays, y: np.ndarray) -> None:
        self._set_state({})

    def _predict(self, a: ArchArrays) -> np.ndarray:
        res = np.asarray(self.resolutions_)
        hi = np.minimum(np.searchsorted(res, a.r), len(res) - 1)
        exact = res[hi] == a.r
        bad = ~exact
        if self.interpolate:
            bad &= (a.r < res[0]) | (a.r > res[-1])
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            where = (f"in [{res[0]}, {res[-1]}] (interpolated between {self.resolutions_})"
                     if self.interpolate else f"one of {self.resolutions_}")
            raise ArchitectureError(f"r must be {where} for this lookup table, got "
                                    f"{int(a.r[i])} (row {i})")
        sp = get_space(self.space)
        active = a.ks > 0
        ki, ei = _choice_index(sp.kernel_sizes, a.ks), _choice_index(sp.expand_ratios, a.e)
        slots = np.arange(a.ks.shape[1])[None, :]

        def price(ri: np.ndarray) -> np.ndarray:
            blocks = self.cost_[ri[:, None], slots, ki, ei] * active
            return self.fixed_[ri] + blocks.sum(axis=1)  # type: ignore[no-any-return]

        if exact.all():
            return price(hi)
        lo = np.where(exact, hi, hi - 1)
        area, r2 = res.astype(np.float64) ** 2, a.r.astype(np.float64) ** 2
        w = np.where(exact, 0.0, (r2 - area[lo]) / np.maximum(area[hi] - area[lo], 1.0))
        return (1.0 - w) * price(lo) + w * price(hi)  # type: ignore[no-any-return]

    def _state(self) -> dict[str, Any]:
        return {"table": self.table, "resolutions": self.resolutions_}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.resolutions_, self.cost_, self.fixed_ = self._arrays()


# ---------------------------------------------------------------------- shipped and imported
def shipped_table_path(device: str) -> Path:
    """Where the package keeps the converted table of ``device`` (it may not exist)."""
    return _SHIPPED / f"{device}.json"


def shipped_table(device: str, space: str) -> TablePredictor | None:
    """The predictor of ``device`` for ``space`` from the table shipped with the package, or
    None when the package ships none for that device.

    Raises:
        ConfigError: the shipped table cannot price ``space``.
    """
    path = shipped_table_path(device)
    if not path.is_file():
        return None
    table = json.loads(read_text(path, "shipped lookup table"))
    sp = get_space(space)
    keyed = get_space(str(table.get("keyed_by")))
    if not _compatible(sp, keyed):
        spaces = [s for s in list_spaces() if _compatible(get_space(s), keyed)]
        raise ConfigError(f"device {device}'s lookup table prices spaces {spaces}, not "
                          f"{sp.name!r}")
    return cast(TablePredictor, TablePredictor.from_state({"space": sp.name},
                                                          {"table": table, "n_train": 0}))


def import_lut(folder: Path | str, device: str, space: str, *,
               db: LatencyDB | str | None = None, out: Path | str | None = None,
               **info: Any) -> TablePredictor:
    """Convert OFA-format tables in ``folder`` into a ``table`` predictor of ``device`` for
    ``space``, and store it: in the latency database (``db``), or as a shipped-table file
    ``out`` when given.

    Raises:
        UnknownNameError: an unknown device (add it first: ``nas devices add NAME
            --external``).
        ConfigError: a folder that holds no usable tables (nothing is stored).
    """
    profile = get_device(device)
    sp = get_space(space)
    table = ofa_table(folder, sp.name, profile.name, **info)
    est = cast(TablePredictor, TablePredictor.from_state({"space": sp.name},
                                                         {"table": table, "n_train": 0}))
    if profile.resolutions is not None and not set(profile.resolutions) <= \
            set(table["resolutions"]):
        raise ConfigError(f"device {profile.name} declares resolutions "
                          f"{profile.resolutions}, the tables have {table['resolutions']}")
    if out is not None:
        atomic_write(out, json.dumps(table, indent=1, sort_keys=True) + "\n")
        return est
    from nas.db import LatencyDB

    store = db if isinstance(db, LatencyDB) else LatencyDB(db)
    store.ensure_device(profile)
    store.save_predictor(profile.name, sp.name, "table", params=est.json_params(),
                         state=est.get_state(), metrics={}, measurement_ids=[])
    return est
