"""Search-space specifications: frozen dataclasses read from ``search_spaces/*.yaml``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nas.errors import ConfigError

__all__ = ["HeadSpec", "LayerSpec", "Preprocessing", "SpaceSpec", "StageSpec", "load_spec"]

ACTIVATIONS = ("relu", "h_swish")


@dataclass(frozen=True)
class LayerSpec:
    """A fixed convolution: the stem, or the first (non-elastic) MBConv block."""

    channels: int
    stride: int
    act: str
    kernel: int = 3
    se: bool = False


@dataclass(frozen=True)
class StageSpec:
    """One elastic stage: output width, stride of its first layer, activation, squeeze-excite."""

    channels: int
    stride: int
    act: str
    se: bool


@dataclass(frozen=True)
class HeadSpec:
    final_expand: int
    feature_mix: int
    dropout: float = 0.0


@dataclass(frozen=True)
class Preprocessing:
    """What a consumer needs to turn an image into the network's input."""

    channel_order: str
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: str


@dataclass(frozen=True)
class SpaceSpec:
    name: str
    description: str
    num_classes: int
    resolutions: tuple[int, ...]
    kernel_sizes: tuple[int, ...]
    expand_ratios: tuple[int, ...]
    depths: tuple[int, ...]
    stem: LayerSpec
    first_block: LayerSpec
    stages: tuple[StageSpec, ...]
    head: HeadSpec
    preprocessing: Preprocessing
    se_reduction: int = 4
    channel_divisor: int = 8


def _need(d: dict[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise ConfigError(f"{where}: missing field {key!r}")
    return d[key]


def _int_list(value: Any, field: str, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value
    ):
        raise ConfigError(
            f"{where}: {field} must be a non-empty list of positive ints, got {value!r}"
        )
    return tuple(sorted(set(value)))


def _act(value: Any, where: str) -> str:
    if value not in ACTIVATIONS:
        raise ConfigError(f"{where}: act must be one of {list(ACTIVATIONS)}, got {value!r}")
    return str(value)


def spec_from_dict(raw: dict[str, Any], where: str = "<dict>") -> SpaceSpec:
    """Build and validate a spec from its YAML mapping."""
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{where}: a search-space spec must be a mapping, got {type(raw).__name__}"
        )
    res = _need(raw, "resolution", where)
    if isinstance(res, dict):
        lo, hi, step = (_need(res, k, f"{where}: resolution") for k in ("min", "max", "step"))
        resolutions = tuple(range(int(lo), int(hi) + 1, int(step)))
    else:
        resolutions = _int_list(res, "resolution", where)
    if not resolutions:
        raise ConfigError(f"{where}: resolution range is empty: {res!r}")
    stem = _need(raw, "stem", where)
    fb = _need(raw, "first_block", where)
    stages_raw = _need(raw, "stages", where)
    if not isinstance(stages_raw, list) or not stages_raw:
        raise ConfigError(f"{where}: stages must be a non-empty list")
    head = _need(raw, "head", where)
    pre = _need(raw, "preprocessing", where)
    kernel_sizes = _int_list(_need(raw, "kernel_sizes", where), "kernel_sizes", where)
    if any(k % 2 == 0 for k in kernel_sizes):
        raise ConfigError(f"{where}: kernel_sizes must be odd, got {list(kernel_sizes)}")
    return SpaceSpec(
        name=str(_need(raw, "name", where)),
        description=str(raw.get("description", "")),
        num_classes=int(_need(raw, "num_classes", where)),
        resolutions=resolutions,
        kernel_sizes=kernel_sizes,
        expand_ratios=_int_list(_need(raw, "expand_ratios", where), "expand_ratios", where),
        depths=_int_list(_need(raw, "depths", where), "depths", where),
        stem=LayerSpec(
            channels=int(stem["channels"]), stride=int(stem["stride"]),
            act=_act(stem["act"], f"{where}: stem"), kernel=int(stem.get("kernel", 3)),
        ),
        first_block=LayerSpec(
            channels=int(fb["channels"]), stride=int(fb["stride"]),
            act=_act(fb["act"], f"{where}: first_block"), kernel=int(fb.get("kernel", 3)),
            se=bool(fb.get("se", False)),
        ),
        stages=tuple(
            StageSpec(
                channels=int(s["channels"]), stride=int(s["stride"]),
                act=_act(s["act"], f"{where}: stages[{i}]"), se=bool(s.get("se", False)),
            )
            for i, s in enumerate(stages_raw)
        ),
        head=HeadSpec(
            final_expand=int(head["final_expand"]), feature_mix=int(head["feature_mix"]),
            dropout=float(head.get("dropout", 0.0)),
        ),
        preprocessing=Preprocessing(
            channel_order=str(pre["channel_order"]), scale=float(pre["scale"]),
            mean=tuple(float(v) for v in pre["mean"]), std=tuple(float(v) for v in pre["std"]),
            resize=str(pre.get("resize", "")),
        ),
        se_reduction=int(raw.get("se_reduction", 4)),
        channel_divisor=int(raw.get("channel_divisor", 8)),
    )


def load_spec(path: Path | str) -> SpaceSpec:
    """Read one ``search_spaces/*.yaml`` file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read search-space spec {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"search-space spec {path} is not valid YAML: {exc}") from exc
    return spec_from_dict(raw, where=str(path.name))
