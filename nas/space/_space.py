"""``SearchSpace``: validation, canonical form, sampling, evolution helpers, encodings, costs."""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from nas._config import ConfigModel
from nas._io import read_text
from nas._plugin import NoOptions
from nas.errors import ArchitectureError
from nas.space._arch import Architecture
from nas.space._family import (
    FAMILIES,
    FamilySpace,
    Genome,
    SpaceFamily,
    choice_indices,
    missing_param,
)
from nas.space._spec import SpaceSpec

__all__ = ["ArchArrays", "OFAFamily", "OFAGenome", "SearchSpace", "make_divisible"]

SeedLike = int | np.random.Generator | None

#: the input sizes ``parse(..., off_grid=True)`` accepts besides the space's search grid: a
#: deployment choice (e.g. a published subnet fine-tuned at 260), never sampled or searched
OFF_GRID_RESOLUTIONS = (32, 1024)


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round ``v`` to a multiple of ``divisor`` without going more than 10% below it.

    The rule of the MobileNet papers and Once-for-All, which fixes every channel count here.
    """
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def _conv_out(size: int, stride: int) -> int:
    # 'same' padding (k // 2) with an odd kernel
    return (size - 1) // stride + 1


def _rng(seed: SeedLike) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


@dataclass(frozen=True)
class ArchArrays:
    """A batch of architectures as integer arrays, for vectorised encodings and costs.

    ``ks`` and ``e`` are ``(n, n_layers)``, zero at layers beyond a stage's depth; ``d`` is
    ``(n, n_stages)``; ``r`` is ``(n,)``.
    """

    ks: np.ndarray
    e: np.ndarray
    d: np.ndarray
    r: np.ndarray

    def __len__(self) -> int:
        return int(self.r.shape[0])


class SearchSpace(FamilySpace):
    """A once-for-all MobileNetV3-family search space built from a :class:`SpaceSpec`.

    Layer slots are ``stage * max_depth + layer`` for the stages with an elastic depth (one
    entry of ``d`` each), followed by the slots of a last stage of fixed depth, if the spec
    has one (OFA's ProxylessNAS: one block, always run, with elastic kernel and expand).

    A space is a plug-in of the one contract (:mod:`nas._plugin`) in the registry
    :data:`~nas.space.SPACES`: its ``name`` and ``description`` come from the spec (a
    description said by its shape when the spec gives none), it takes no ``Options`` (the
    spec is its settings), and its ``tags`` are its family (``{"ofa"}``).

    Attributes:
        n_stages: stages with an elastic depth: the entries of an architecture's ``d``.
        fixed_depth: layers of the fixed-depth last stage (0: every stage is elastic).
        n_layers: layer slots: ``n_stages * max_depth + fixed_depth`` (entries of ks, e).

    Example:
        >>> space = get_space("ofa_mbv3")
        >>> arch = space.parse({"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "r": 224})
        >>> space.macs(arch), space.params(arch)
    """

    #: a space takes no options: its spec is its settings (the plug-in contract)
    Options: ClassVar[type[ConfigModel]] = NoOptions

    spec: SpaceSpec

    def __init__(self, spec: SpaceSpec) -> None:
        self.spec = spec
        self.name = spec.name
        #: the family of its architectures (the spec's ``family``)
        self.family: str = spec.family
        #: the families plug-ins name to apply to it: its own
        self.tags: frozenset[str] = frozenset({spec.family})
        last = spec.stages[-1]
        self.fixed_depth = last.depth or 0
        self.n_stages = len(spec.stages) - (1 if last.depth is not None else 0)
        self.max_depth = max(spec.depths)
        self.n_layers = self.n_stages * self.max_depth + self.fixed_depth
        self.resolutions = spec.resolutions
        self.kernel_sizes = spec.kernel_sizes
        self.expand_ratios = spec.expand_ratios
        self.depths = spec.depths

    def __repr__(self) -> str:
        return f"SearchSpace({self.name!r})"

    @property
    def description(self) -> str:
        """One line: the spec's ``description``, else one said by the space's shape."""
        if self.spec.description:
            return self.spec.description
        res = self.resolutions
        return (f"{self.family} space: {len(self.spec.stages)} stages, kernels "
                f"{_fmt_choices(self.kernel_sizes)}, expand {_fmt_choices(self.expand_ratios)}"
                f", depths {_fmt_choices(self.depths)}, {res[0]}-{res[-1]} px, "
                f"{self.spec.num_classes} classes")

    # ------------------------------------------------------------------ validation
    def parse(self, obj: Architecture | dict[str, Any] | str | Path, *,
              off_grid: bool = False) -> Architecture:
        """Validate an architecture and return it in canonical form.

        Args:
            obj: an ``Architecture``, a dict in OFA's format, JSON text, or ``@path`` to a
                JSON file.
            off_grid: also accept a resolution off the space's search grid (any int in
                :data:`OFF_GRID_RESOLUTIONS`): a deployment choice, such as the input size
                a published subnet was fine-tuned at. Sampling and search keep to the grid.

        Raises:
            ArchitectureError: naming the field, the bad value and what is allowed.
        """
        if isinstance(obj, Architecture):
            if obj.space != self.name:
                raise ArchitectureError(
                    f"architecture belongs to space {obj.space!r}, not {self.name!r}"
                )
            obj = obj.to_dict()
        elif isinstance(obj, Path):
            obj = _read_json_file(obj)
        elif isinstance(obj, str):
            text = obj.strip()
            if text.startswith("@"):
                obj = _read_json_file(Path(text[1:]))
            else:
                try:
                    obj = _loads(text)
                except json.JSONDecodeError as exc:
                    raise ArchitectureError(
                        f"arch is not valid JSON ({exc.msg} at line {exc.lineno} column "
                        f"{exc.colno}); expected {{\"ks\": [...], \"e\": [...], \"d\": [...], "
                        f"\"r\": int}}"
                    ) from exc
        if not isinstance(obj, dict):
            raise ArchitectureError(
                f"arch must be a JSON object with keys ks, e, d, r; got {type(obj).__name__}"
            )
        try:
            return self._validate(obj, off_grid=off_grid)
        except ArchitectureError as exc:
            other = self._other_space_of(obj)
            if other is None:
                raise
            raise ArchitectureError(f"{exc} (it is an architecture of space {other})") from None

    def _other_space_of(self, raw: dict[str, Any]) -> str | None:
        """The first other registered space that accepts ``raw``, for error messages."""
        from nas.space._registry import get_space, list_spaces

        for name in list_spaces():
            if name == self.name or get_space(name).family != self.family:
                continue
            try:
                get_space(name)._validate({k: v for k, v in raw.items() if k != "space"})
            except ArchitectureError:
                continue
            return name
        return None

    def parse_file(self, path: Path | str) -> list[Architecture]:
        """Architectures from a JSON-lines file (one per line) or a file holding a JSON list.

        Blank lines and lines starting with ``#`` are skipped; a row may wrap its architecture
        as ``{"arch": {...}, ...}`` (as ``nas spaces sample --json`` prints them).

        Raises:
            ArchitectureError: naming the file and line of the first bad entry.
        """
        path = Path(path)
        text = read_text(path, "arch file", error=ArchitectureError)
        stripped = text.strip()
        rows: list[tuple[int, Any]] = []
        if stripped.startswith("["):
            try:
                rows = list(enumerate(_loads(stripped), 1))
            except json.JSONDecodeError as exc:
                raise ArchitectureError(
                    f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})"
                ) from None
            except ArchitectureError as exc:
                raise ArchitectureError(f"{path}: {exc}") from None
        else:
            for n, line in enumerate(text.splitlines(), 1):
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                try:
                    rows.append((n, _loads(line)))
                except json.JSONDecodeError as exc:
                    raise ArchitectureError(
                        f"{path} line {n} is not valid JSON ({exc.msg})"
                    ) from None
                except ArchitectureError as exc:
                    raise ArchitectureError(f"{path} line {n}: {exc}") from None
        archs = []
        for n, item in rows:
            if isinstance(item, dict) and isinstance(item.get("arch"), dict):
                item = item["arch"]
            try:
                archs.append(self.parse(item))
            except ArchitectureError as exc:
                raise ArchitectureError(f"{path} line {n}: {exc}") from None
        return archs

    def _validate(self, raw: dict[str, Any], off_grid: bool = False) -> Architecture:
        self._check_fields(raw)
        ks = _int_seq(raw["ks"], "ks", self.n_layers)
        e = _int_seq(raw["e"], "e", self.n_layers)
        d = self._depths(raw["d"])
        r = self._resolution(raw["r"], off_grid)
        ks_c, e_c = [], []
        for s, depth in enumerate(d):
            if depth not in self.depths:
                raise ArchitectureError(
                    f"d[{s}] must be one of {list(self.depths)}, got {depth!r} (stage {s + 1})"
                )
            for i in range(self.max_depth):
                j = s * self.max_depth + i
                if i < depth:
                    self._check_layer(ks, e, s, i)
                    ks_c.append(ks[j])
                    e_c.append(e[j])
                else:  # canonical filler for layers that do not run
                    ks_c.append(self.kernel_sizes[0])
                    e_c.append(self.expand_ratios[0])
        s = self.n_stages
        for i in range(self.fixed_depth):  # the fixed-depth last stage: every layer runs
            j = s * self.max_depth + i
            self._check_layer(ks, e, s, i)
            ks_c.append(ks[j])
            e_c.append(e[j])
        return Architecture(self.name, tuple(ks_c), tuple(e_c), tuple(d), r,
                            fixed_depth=self.fixed_depth)

    def _check_fields(self, raw: dict[str, Any]) -> None:
        """An architecture's fields: ks, e, d and r, besides OFA's "wid" key (always None in
        its MobileNetV3 configs, ignored) and the space's name."""
        unknown = set(raw) - {"ks", "e", "d", "r", "wid", "space"}
        if unknown:
            raise ArchitectureError(
                f"arch has unknown field(s) {sorted(unknown)}; allowed: ks, e, d, r"
            )
        if "space" in raw and raw["space"] != self.name:
            raise ArchitectureError(
                f"arch belongs to space {raw['space']!r}, not {self.name!r}"
            )
        for key in ("ks", "e", "d", "r"):
            if key not in raw:
                raise ArchitectureError(f"arch is missing field {key!r} (space {self.name})")

    def _resolution(self, r: Any, off_grid: bool) -> int:
        """``r``: one of the space's resolutions, or with ``off_grid`` any int in
        :data:`OFF_GRID_RESOLUTIONS` (a published subnet's own size)."""
        lo, hi = OFF_GRID_RESOLUTIONS
        if off_grid and _is_int(r) and r not in self.resolutions and not lo <= r <= hi:
            raise ArchitectureError(f"r must be an int in [{lo}, {hi}] (off the search grid "
                                    f"of space {self.name}), got {r!r}")
        if not _is_int(r) or (r not in self.resolutions and not off_grid):
            raise ArchitectureError(
                f"r must be one of {_fmt_choices(self.resolutions)} for space {self.name}, "
                f"got {r!r}"
            )
        return int(r)

    def _check_layer(self, ks: list[int], e: list[int], s: int, i: int) -> None:
        """The kernel size and expand ratio of layer ``i`` of stage ``s``, which runs."""
        j = s * self.max_depth + i
        if ks[j] not in self.kernel_sizes:
            raise ArchitectureError(
                f"kernel size must be one of {list(self.kernel_sizes)}, got {ks[j]!r} at "
                f"ks[{j}] (stage {s + 1}, layer {i + 1})")
        if e[j] not in self.expand_ratios:
            raise ArchitectureError(
                f"expand ratio must be one of {list(self.expand_ratios)}, got {e[j]!r} at "
                f"e[{j}] (stage {s + 1}, layer {i + 1})")

    def _depths(self, value: Any) -> list[int]:
        """``d``: one depth per elastic stage; OFA's form with one more entry for the
        fixed-depth last stage is accepted when that entry is the stage's depth (and dropped)."""
        if self.fixed_depth and isinstance(value, list | tuple) \
                and len(value) == self.n_stages + 1:
            last = value[-1]
            if not _is_int(last) or last != self.fixed_depth:
                raise ArchitectureError(
                    f"d[{self.n_stages}] must be {self.fixed_depth}, got {last!r} (stage "
                    f"{self.n_stages + 1} has a fixed depth; d may leave it out)")
            value = list(value)[:-1]
        if self.fixed_depth and isinstance(value, list | tuple) \
                and len(value) != self.n_stages:
            raise ArchitectureError(
                f"d must have {self.n_stages} entries (one per stage of elastic depth; OFA's "
                f"form adds {self.fixed_depth} for stage {self.n_stages + 1}), got {len(value)}")
        return _int_seq(value, "d", self.n_stages)

    def equivalent_forms(self, arch: Architecture) -> list[dict[str, Any]]:
        """``arch`` with other kernels and expand ratios at the layers that do not run, and
        with OFA's ``"wid": null``: the same network."""
        ks, e = list(arch.ks), list(arch.e)
        md = self.max_depth
        for s, depth in enumerate(arch.d):
            for i in range(depth, md):
                ks[s * md + i] = max(self.kernel_sizes)
                e[s * md + i] = max(self.expand_ratios)
        return [{"ks": ks, "e": e, "d": list(arch.d), "r": arch.r},
                {**arch.to_dict(), "wid": None}]

    def stage_depths(self, arch: Architecture) -> tuple[int, ...]:
        """Depth of every stage of the spec: ``arch.d`` and the fixed depth of the last
        stage, if it has one (so ``zip(spec.stages, stage_depths(a))`` covers the network)."""
        return tuple(arch.d) + ((self.fixed_depth,) if self.fixed_depth else ())

    def arch(self, ks: Sequence[int], e: Sequence[int], d: Sequence[int], r: int) -> Architecture:
        """Shorthand for ``parse({"ks": ks, "e": e, "d": d, "r": r})``."""
        return self._validate({"ks": list(ks), "e": list(e), "d": list(d), "r": r})

    # ------------------------------------------------------------------ sampling
    def sample(self, seed: SeedLike = None) -> Architecture:
        """One architecture drawn uniformly per choice (each layer, depth and resolution)."""
        rng = _rng(seed)
        return self.arch(
            ks=[int(v) for v in rng.choice(self.kernel_sizes, self.n_layers)],
            e=[int(v) for v in rng.choice(self.expand_ratios, self.n_layers)],
            d=[int(v) for v in rng.choice(self.depths, self.n_stages)],
            r=int(rng.choice(self.resolutions)),
        )

    def sample_many(
        self, n: int, seed: SeedLike = None, unique: bool = True
    ) -> list[Architecture]:
        """``n`` architectures; distinct ones when ``unique`` (the space must be large enough)."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        rng = _rng(seed)
        if not unique:
            return [self.sample(rng) for _ in range(n)]
        if n > self.size(with_resolution=True):
            raise ArchitectureError(
                f"cannot draw {n} distinct architectures from {self.name}: it has "
                f"{self.size(with_resolution=True)} (resolutions included)"
            )
        seen: dict[Architecture, None] = {}
        while len(seen) < n:
            seen.setdefault(self.sample(rng))
        return list(seen)

    def largest(self, r: int | None = None) -> Architecture:
        return self.arch(
            [max(self.kernel_sizes)] * self.n_layers, [max(self.expand_ratios)] * self.n_layers,
            [max(self.depths)] * self.n_stages, max(self.resolutions) if r is None else r,
        )

    def smallest(self, r: int | None = None) -> Architecture:
        return self.arch(
            [min(self.kernel_sizes)] * self.n_layers, [min(self.expand_ratios)] * self.n_layers,
            [min(self.depths)] * self.n_stages, min(self.resolutions) if r is None else r,
        )

    def middle(self, r: int | None = None) -> Architecture:
        """Every dimension at its middle choice (the upper middle of an even count), and the
        middle resolution unless ``r`` is given."""

        def mid(choices: Sequence[int]) -> int:
            c = sorted(choices)
            return int(c[len(c) // 2])

        return self.arch([mid(self.kernel_sizes)] * self.n_layers,
                         [mid(self.expand_ratios)] * self.n_layers,
                         [mid(self.depths)] * self.n_stages,
                         mid(self.resolutions) if r is None else r)

    def mutate(
        self, arch: Architecture, seed: SeedLike = None, prob: float = 0.1,
        resolution_prob: float | None = None,
    ) -> Architecture:
        """OFA's evolutionary mutation: resample each gene with probability ``prob``.

        Genes are every layer's kernel and expand ratio, every stage's depth and the
        resolution (with ``resolution_prob``, default ``prob``).
        """
        rng = _rng(seed)
        arch = self.parse(arch)
        ks, e, d, r = list(arch.ks), list(arch.e), list(arch.d), arch.r
        for j in range(self.n_layers):
            if rng.random() < prob:
                ks[j] = int(rng.choice(self.kernel_sizes))
            if rng.random() < prob:
                e[j] = int(rng.choice(self.expand_ratios))
        for s in range(self.n_stages):
            if rng.random() < prob:
                d[s] = int(rng.choice(self.depths))
        if rng.random() < (prob if resolution_prob is None else resolution_prob):
            r = int(rng.choice(self.resolutions))
        return self.arch(ks, e, d, r)

    def crossover(self, a: Architecture, b: Architecture, seed: SeedLike = None) -> Architecture:
        """Uniform crossover: each gene from either parent with equal probability."""
        rng = _rng(seed)
        a, b = self.parse(a), self.parse(b)

        def pick(x: Sequence[int], y: Sequence[int]) -> list[int]:
            return [xi if rng.random() < 0.5 else yi for xi, yi in zip(x, y, strict=True)]

        return self.arch(
            pick(a.ks, b.ks), pick(a.e, b.e), pick(a.d, b.d), a.r if rng.random() < 0.5 else b.r
        )

    # ------------------------------------------------------------------ size
    def size(self, with_resolution: bool = False) -> int:
        """Number of distinct architectures (networks), optionally times the resolutions."""
        per_layer = len(self.kernel_sizes) * len(self.expand_ratios)
        per_stage = sum(per_layer**depth for depth in self.depths)
        n: int = per_stage**self.n_stages * per_layer**self.fixed_depth  # powers of naturals
        return n * len(self.resolutions) if with_resolution else n

    def n_architectures(self) -> int:
        """Networks times resolutions: an architecture here includes its resolution."""
        return self.size(with_resolution=True)

    # ------------------------------------------------------------------ arrays & encodings
    def to_arrays(self, archs: Iterable[Architecture]) -> ArchArrays:
        """Stack architectures into integer arrays (zeros at layers that do not run)."""
        archs = list(archs)
        n = len(archs)
        ks = np.zeros((n, self.n_layers), dtype=np.int64)
        e = np.zeros((n, self.n_layers), dtype=np.int64)
        d = np.zeros((n, self.n_stages), dtype=np.int64)
        r = np.zeros(n, dtype=np.int64)
        for i, a in enumerate(archs):
            if a.space != self.name:
                raise ArchitectureError(
                    f"architecture {i} belongs to space {a.space!r}, not {self.name!r}"
                )
            ks[i] = a.ks
            e[i] = a.e
            d[i] = a.d
            r[i] = a.r
        mask = self._active_mask(d)
        return ArchArrays(ks * mask, e * mask, d, r)

    def _active_mask(self, d: np.ndarray) -> np.ndarray:
        idx = np.arange(self.max_depth)
        n = len(d)
        mask = (idx[None, None, :] < d[:, :, None]).reshape(n, self.n_stages * self.max_depth)
        if self.fixed_depth:  # the fixed-depth stage's layers always run
            mask = np.concatenate([mask, np.ones((n, self.fixed_depth), dtype=bool)], axis=1)
        return mask

    def encode(
        self, archs: Iterable[Architecture] | ArchArrays, kind: str = "onehot"
    ) -> np.ndarray:
        """Fixed-length float32 features, one row per architecture.

        Args:
            kind: ``"onehot"``, OFA's accuracy-predictor encoding (a one-hot of kernel and of
                expand ratio per layer, all zeros at layers that do not run, and a one-hot of
                the resolution), or ``"ordinal"``, a compact one (kernel and expand value per
                layer, zero where skipped; depth per stage; resolution).
        """
        a = archs if isinstance(archs, ArchArrays) else self.to_arrays(archs)
        if kind == "onehot":
            ks_oh = a.ks[:, :, None] == np.asarray(self.kernel_sizes)[None, None, :]
            e_oh = a.e[:, :, None] == np.asarray(self.expand_ratios)[None, None, :]
            r_oh = a.r[:, None] == np.asarray(self.resolutions)[None, :]
            n = len(a)
            return np.concatenate(
                [ks_oh.reshape(n, ks_oh.shape[1] * ks_oh.shape[2]),
                 e_oh.reshape(n, e_oh.shape[1] * e_oh.shape[2]), r_oh], axis=1
            ).astype(np.float32)
        if kind == "ordinal":
            return np.concatenate([a.ks, a.e, a.d, a.r[:, None]], axis=1).astype(np.float32)
        raise ValueError(f"encoding kind must be one of ['onehot', 'ordinal'], got {kind!r}")

    def encoding_size(self, kind: str = "onehot") -> int:
        if kind == "onehot":
            return self.n_layers * (len(self.kernel_sizes) + len(self.expand_ratios)) + len(
                self.resolutions
            )
        return 2 * self.n_layers + self.n_stages + 1

    def from_arrays(self, batch: ArchArrays | Iterable[Architecture]) -> list[Architecture]:
        """The canonical architectures of :class:`ArchArrays` (zeros, or any value, at
        layers that do not run), or of any iterable of architectures."""
        if not isinstance(batch, ArchArrays):
            return [self.parse(a) for a in batch]
        return [self.arch(ks=batch.ks[i].tolist(), e=batch.e[i].tolist(),
                          d=batch.d[i].tolist(), r=int(batch.r[i])) for i in range(len(batch))]

    # ------------------------------------------------------------------ search parameters
    def _slot(self, j: int) -> str:
        """Layer slot ``j`` as ``stage.layer`` (1-based), as parameter names have it."""
        return f"{j // self.max_depth + 1}.{j % self.max_depth + 1}"

    def _search_resolutions(self, resolutions: Sequence[int] | None) -> tuple[int, ...]:
        res = tuple(sorted(int(r) for r in (resolutions or self.resolutions)))
        bad = [r for r in res if r not in self.resolutions]
        if bad:
            raise ValueError(f"resolution {bad[0]} is not one of "
                             f"{_fmt_choices(self.resolutions)} (space {self.name})")
        return res

    def search_params(self, resolutions: Sequence[int] | None = None
                      ) -> dict[str, tuple[int, ...]]:
        """Names that read like the network: ``r`` (the resolution), ``d1``..``dS`` (stage
        depths), then per layer slot ``k1.1`` and ``e1.1`` (kernel and expand ratio of stage
        1, layer 1; a fixed-depth last stage's slots are stage ``S + 1``'s)."""
        out: dict[str, tuple[int, ...]] = {"r": self._search_resolutions(resolutions)}
        for s in range(self.n_stages):
            out[f"d{s + 1}"] = tuple(self.depths)
        for j in range(self.n_layers):
            out[f"k{self._slot(j)}"] = tuple(self.kernel_sizes)
            out[f"e{self._slot(j)}"] = tuple(self.expand_ratios)
        return out

    def to_params(self, arch: Architecture) -> dict[str, int]:
        arch = self.parse(arch, off_grid=True)
        out: dict[str, int] = {"r": int(arch.r)}
        for s, d in enumerate(arch.d):
            out[f"d{s + 1}"] = int(d)
        for j in range(self.n_layers):
            out[f"k{self._slot(j)}"] = int(arch.ks[j])
            out[f"e{self._slot(j)}"] = int(arch.e[j])
        return out

    def from_params(self, params: Mapping[str, Any]) -> Architecture:
        missing = missing_param(self, params)
        if missing is not None:
            raise missing
        slots = [self._slot(j) for j in range(self.n_layers)]
        return self.arch(ks=[int(params[f"k{s}"]) for s in slots],
                         e=[int(params[f"e{s}"]) for s in slots],
                         d=[int(params[f"d{s + 1}"]) for s in range(self.n_stages)],
                         r=int(params["r"]))

    def genome(self, resolutions: Sequence[int] | None = None) -> OFAGenome:
        return OFAGenome(self, resolutions)

    # ------------------------------------------------------------------ channel plan
    @cached_property
    def layer_plan(self) -> list[tuple[int, int, int, int, int, bool]]:
        """Per layer slot: ``(stage, index, in_channels, out_channels, stride, se)``.

        ``stage`` indexes ``spec.stages``: the fixed-depth last stage's slots come last."""
        plan = []
        cin = self.spec.first_block.channels
        for s, st in enumerate(self.spec.stages):
            for i in range(st.depth or self.max_depth):
                plan.append((s, i, cin if i == 0 else st.channels, st.channels,
                             st.stride if i == 0 else 1, st.se))
            cin = st.channels
        return plan

    def mid_channels(self, cin: int, expand: int) -> int:
        return make_divisible(round(cin * expand), self.spec.channel_divisor)

    def se_channels(self, mid: int) -> int:
        return make_divisible(mid // self.spec.se_reduction, self.spec.channel_divisor)

    # ------------------------------------------------------------------ analytic costs
    def costs(self, archs: Iterable[Architecture] | ArchArrays) -> dict[str, np.ndarray]:
        """MACs and parameters of many architectures at once, without building a model.

        Counts every multiply-accumulate of convolutions and linear layers (squeeze-excite
        included; BatchNorm, activations, pooling and additions excluded), and every trainable
        parameter of the extracted subnet (BatchNorm affine parameters included).

        Returns:
            ``macs`` and ``params`` (``(n,)`` int64), and ``stage_macs`` and ``stage_params``
            (``(n, len(spec.stages))``: a fixed-depth last stage has a column too).
        """
        a = archs if isinstance(archs, ArchArrays) else self.to_arrays(archs)
        n = len(a)
        sp = self.spec
        hw = _conv_out_arr(a.r, sp.stem.stride)
        c0, c1 = sp.stem.channels, sp.first_block.channels
        macs = hw**2 * 3 * c0 * sp.stem.kernel**2
        params = np.full(n, 3 * c0 * sp.stem.kernel**2 + 2 * c0, dtype=np.int64)
        # first block: depthwise (expand 1, no inverted bottleneck) + pointwise
        fb_m, fb_p, hw = _block_cost(c0, c0, c1, sp.first_block.kernel, sp.first_block.stride,
                                     hw, sp.first_block.se, False, self)
        macs = macs + fb_m
        params = params + fb_p
        stage_macs = np.zeros((n, len(sp.stages)), dtype=np.int64)
        stage_params = np.zeros((n, len(sp.stages)), dtype=np.int64)
        for j, (s, _i, cin, cout, stride, se) in enumerate(self.layer_plan):
            active = a.ks[:, j] > 0
            m = np.zeros(n, dtype=np.int64)
            p = np.zeros(n, dtype=np.int64)
            hw_next = _conv_out_arr(hw, stride)
            for k in self.kernel_sizes:
                for ex in self.expand_ratios:
                    sel = active & (a.ks[:, j] == k) & (a.e[:, j] == ex)
                    if not sel.any():
                        continue
                    mid = self.mid_channels(cin, ex)
                    bm, bp, _ = _block_cost(cin, mid, cout, k, stride, hw[sel], se, True, self)
                    m[sel] = bm
                    p[sel] = bp
            stage_macs[:, s] += m
            stage_params[:, s] += p
            hw = np.where(active, hw_next, hw)
        macs = macs + stage_macs.sum(1)
        params = params + stage_params.sum(1)
        cl, fe, fm = sp.stages[-1].channels, sp.head.final_expand, sp.head.feature_mix
        if fe is None:  # ProxylessNAS: 1x1 conv + BN to feature_mix before the pooling
            macs = macs + hw**2 * cl * fm + fm * sp.num_classes
            params = params + cl * fm + 2 * fm + fm * sp.num_classes + sp.num_classes
        else:  # MobileNetV3: final expand (conv + BN), pooling, feature mix (conv, no BN)
            macs = macs + hw**2 * cl * fe + fe * fm + fm * sp.num_classes
            params = params + cl * fe + 2 * fe + fe * fm + fm * sp.num_classes + sp.num_classes
        return {"macs": macs.astype(np.int64), "params": params.astype(np.int64),
                "stage_macs": stage_macs, "stage_params": stage_params}

    def macs(self, arch: Architecture) -> int:
        """MACs of ``arch`` (at its resolution, on the search grid or not)."""
        return int(self.costs([self.parse(arch, off_grid=True)])["macs"][0])

    def params(self, arch: Architecture) -> int:
        return int(self.costs([self.parse(arch, off_grid=True)])["params"][0])


class OFAGenome(Genome):
    """Subnets of an OFA space as genomes ``[r, d_1..d_S, k_1..k_L, e_1..e_L]`` (choice
    indices), vectorised; the genes of layers beyond their stage's depth are 0 in a
    canonical genome, so two genomes of the same network are equal.

    Args:
        space: the search space.
        resolutions: the resolutions a search may pick (default: the space's grid); a
            device that prices only some resolutions narrows this.
    """

    space: SearchSpace

    def __init__(self, space: SearchSpace, resolutions: Sequence[int] | None = None) -> None:
        self.space = space
        self.resolutions = space._search_resolutions(resolutions)
        self._res = np.asarray(self.resolutions, np.int64)
        self.kernels = np.asarray(space.kernel_sizes, np.int64)
        self.expands = np.asarray(space.expand_ratios, np.int64)
        self.depths = np.asarray(space.depths, np.int64)
        S, L = space.n_stages, space.n_layers
        self.n_stages, self.n_layers = S, L
        # slots beyond the elastic stages' (a fixed-depth last stage's) always run: their
        # position is below every depth
        elastic = np.arange(L) < S * space.max_depth
        self.slot_stage = np.where(elastic, np.arange(L) // space.max_depth, 0)
        self.slot_pos = np.where(elastic, np.arange(L) % space.max_depth, -1)
        self.sizes = np.array([len(self._res)] + [len(self.depths)] * S
                              + [len(self.kernels)] * L + [len(self.expands)] * L, np.int64)

    def _parts(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        S, L = self.n_stages, self.n_layers
        return X[:, 0], X[:, 1:1 + S], X[:, 1 + S:1 + S + L], X[:, 1 + S + L:]

    def active(self, X: np.ndarray) -> np.ndarray:
        """``(n, L)``: whether each layer slot runs."""
        _, di, _, _ = self._parts(X)
        d = self.depths[di]
        out: np.ndarray = self.slot_pos[None, :] < d[:, self.slot_stage]
        return out

    def canonical(self, X: np.ndarray) -> np.ndarray:
        S, L = self.n_stages, self.n_layers
        off = ~self.active(X)
        X[:, 1 + S:1 + S + L][off] = 0
        X[:, 1 + S + L:][off] = 0
        return X

    def decode(self, X: np.ndarray) -> ArchArrays:
        """Genomes as :class:`ArchArrays` (zeros at layers that do not run)."""
        ri, di, ki, ei = self._parts(X)
        act = self.active(X)
        return ArchArrays(ks=np.where(act, self.kernels[ki], 0),
                          e=np.where(act, self.expands[ei], 0),
                          d=self.depths[di], r=self._res[ri])

    def encode(self, batch: ArchArrays | Iterable[Architecture]) -> np.ndarray:
        a = batch if isinstance(batch, ArchArrays) else self.space.to_arrays(
            self.space.from_arrays(batch))
        act = a.ks > 0
        ks = np.where(act, a.ks, self.kernels[0])
        e = np.where(act, a.e, self.expands[0])
        return np.concatenate([
            choice_indices(self._res, a.r, "resolution")[:, None],
            choice_indices(self.depths, a.d, "depth"),
            np.where(act, choice_indices(self.kernels, ks, "kernel size"), 0),
            np.where(act, choice_indices(self.expands, e, "expand ratio"), 0),
        ], axis=1).astype(np.int64)

    def smallest(self) -> np.ndarray:
        """The smallest subnet at every resolution (ascending)."""
        sp = self.space
        return self.encode(sp.to_arrays([sp.smallest(r) for r in self.resolutions]))

    def largest(self) -> np.ndarray:
        """The largest subnet at every resolution (ascending)."""
        sp = self.space
        return self.encode(sp.to_arrays([sp.largest(r) for r in self.resolutions]))


def _conv_out_arr(size: np.ndarray, stride: int) -> np.ndarray:
    return (np.asarray(size, dtype=np.int64) - 1) // stride + 1


def _block_cost(
    cin: int, mid: int, cout: int, k: int, stride: int, hw_in: np.ndarray, se: bool,
    expand: bool, space: SearchSpace,
) -> tuple[np.ndarray, int, np.ndarray]:
    """MACs (per input size), params and output size of one MBConv block."""
    hw_out = _conv_out_arr(hw_in, stride)
    macs = hw_out**2 * mid * k * k + hw_out**2 * mid * cout
    params = mid * k * k + 2 * mid + mid * cout + 2 * cout
    if expand:
        macs = macs + hw_in**2 * cin * mid
        params += cin * mid + 2 * mid
    if se:
        se_mid = space.se_channels(mid)
        macs = macs + 2 * mid * se_mid
        params += 2 * mid * se_mid + se_mid + mid
    return macs, params, hw_out


def _is_int(v: Any) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def _int_seq(value: Any, field: str, length: int) -> list[int]:
    if not isinstance(value, list | tuple):
        raise ArchitectureError(f"{field} must be a list of {length} ints, got {value!r}")
    if len(value) != length:
        what = "one per stage" if field == "d" else "one per layer slot"
        raise ArchitectureError(
            f"{field} must have {length} entries ({what}), got {len(value)}"
        )
    for i, v in enumerate(value):
        if not _is_int(v):
            raise ArchitectureError(f"{field}[{i}] must be an int, got {v!r}")
    return [int(v) for v in value]


def _fmt_choices(values: Sequence[int]) -> str:
    vals = list(values)
    steps = {b - a for a, b in itertools.pairwise(vals)}
    if len(vals) > 6 and len(steps) == 1:
        return f"{vals[0]}..{vals[-1]} in steps of {steps.pop()}"
    return str(vals)


def _loads(text: str) -> Any:
    """``json.loads``, but a number of over 4300 digits or nesting too deep for the parser
    (Python's ``ValueError``/``RecursionError``) is an :class:`ArchitectureError`."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except ValueError:
        raise ArchitectureError(f"arch is not valid JSON (a number of over "
                                f"{sys.get_int_max_str_digits()} digits)") from None
    except RecursionError:
        raise ArchitectureError("arch is not valid JSON (nested too deep)") from None


def _read_json_file(path: Path) -> Any:
    text = read_text(path, "arch file", error=ArchitectureError)
    try:
        return _loads(text)
    except ArchitectureError as exc:
        raise ArchitectureError(f"arch file {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ArchitectureError(
            f"arch file {path} is not valid JSON ({exc.msg} at line {exc.lineno})"
        ) from None


@FAMILIES.register
class OFAFamily(SpaceFamily):
    """Once-for-All's convolutional family (MobileNetV3 and ProxylessNAS layouts):
    architectures ``{"ks": [...], "e": [...], "d": [...], "r": int}``."""

    name = "ofa"
    description = ("Once-for-All's convolutional MobileNetV3/ProxylessNAS spaces: elastic "
                   "kernel, expand ratio, depth and resolution")
    Spec = SpaceSpec
    Space = SearchSpace
    supernet = "nas.supernet:OFASupernet"
    checkpoint_meta = "nas.supernet:read_checkpoint_meta"
    load_supernet = "nas.supernet:load_supernet"
    timing_supernet = "nas.supernet._ofa:random_ofa_supernet"
    timing_onnx = "nas.export._onnx:subnet_onnx"
    export_signature = "image (batch, 3, r, r) float32 -> logits (batch, num_classes)"
    latency_features = "per-layer lookup tables by resolution, kernel and expand ratio"
