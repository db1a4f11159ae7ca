"""Search-space specifications: frozen pydantic models read from ``search_spaces/*.yaml``.

A bad spec raises one :class:`~nas.errors.ConfigError` line naming the file, the field, the
value and what is allowed (the shared format of :mod:`nas._config`)::

    search_spaces/x.yaml: stem.act = 'gelu': Input should be 'relu' or 'h_swish'
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, Strict

from nas._config import ConfigModel

__all__ = ["HeadSpec", "LayerSpec", "Preprocessing", "SpaceSpec", "StageSpec", "load_spec"]

ACTIVATIONS = ("relu", "h_swish")

Act = Literal["relu", "h_swish"]
PosInt = Annotated[int, Strict(), Field(gt=0)]


def _sorted_unique(values: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(sorted(set(values)))


def _odd(values: tuple[int, ...]) -> tuple[int, ...]:
    if any(k % 2 == 0 for k in values):
        raise ValueError("kernel sizes must be odd")
    return values


def _resolution_range(value: Any) -> Any:
    """``{min, max, step}`` (OFA's 128..224 in steps of 4) as the list of resolutions."""
    if not isinstance(value, dict):
        return value
    missing = [k for k in ("min", "max", "step") if k not in value]
    if missing or set(value) - {"min", "max", "step"}:
        raise ValueError("a resolution range needs exactly min, max and step")
    lo, hi, step = (value[k] for k in ("min", "max", "step"))
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi, step)) \
            or step < 1:
        raise ValueError("min, max and step must be ints (step >= 1)")
    values = list(range(lo, hi + 1, step))
    if not values:
        raise ValueError("resolution range is empty (min > max)")
    return values


#: a non-empty list of positive ints, kept sorted and without repeats
Choices = Annotated[tuple[PosInt, ...], Field(min_length=1), AfterValidator(_sorted_unique)]


class _Part(ConfigModel):
    what = "search-space spec"


class LayerSpec(_Part):
    """A fixed convolution: the stem, or the first (non-elastic) MBConv block."""

    channels: PosInt
    stride: PosInt
    act: Act
    kernel: PosInt = 3
    se: bool = False


class StageSpec(_Part):
    """One elastic stage: output width, stride of its first layer, activation, squeeze-excite."""

    channels: PosInt
    stride: PosInt
    act: Act
    se: bool = False


class HeadSpec(_Part):
    final_expand: PosInt
    feature_mix: PosInt
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0


class Preprocessing(_Part):
    """What a consumer needs to turn an image into the network's input."""

    channel_order: str
    scale: Annotated[float, Field(gt=0.0)]
    mean: tuple[float, ...]
    std: tuple[Annotated[float, Field(gt=0.0)], ...]
    resize: str = ""


class SpaceSpec(_Part):
    """A once-for-all MobileNetV3-family space (see ``search_spaces/*.yaml``).

    ``resolution`` in YAML is a list of sizes or a range ``{min, max, step}``; the model keeps
    the sorted list as :attr:`resolutions`.
    """

    name: Annotated[str, Strict(), Field(min_length=1)]
    description: str = ""
    num_classes: PosInt
    resolutions: Annotated[
        Choices, BeforeValidator(_resolution_range), Field(validation_alias="resolution")
    ]
    kernel_sizes: Annotated[Choices, AfterValidator(_odd)]
    expand_ratios: Choices
    depths: Choices
    stem: LayerSpec
    first_block: LayerSpec
    stages: Annotated[tuple[StageSpec, ...], Field(min_length=1)]
    head: HeadSpec
    preprocessing: Preprocessing
    se_reduction: PosInt = 4
    channel_divisor: PosInt = 8


def spec_from_dict(raw: Any, where: str = "<dict>") -> SpaceSpec:
    """Build and validate a spec from its YAML mapping; errors name ``where`` and the field."""
    spec: SpaceSpec = SpaceSpec.from_dict(raw, where=where)
    return spec


def load_spec(path: Path | str) -> SpaceSpec:
    """Read one ``search_spaces/*.yaml`` file (any problem: one line naming file and field)."""
    spec: SpaceSpec = SpaceSpec.load(path)
    return spec
