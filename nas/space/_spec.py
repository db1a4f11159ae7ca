"""Search-space specifications: frozen pydantic models read from ``search_spaces/*.yaml``.

A bad spec raises one :class:`~nas.errors.ConfigError` line naming the file, the field, the
value and what is allowed (the shared format of :mod:`nas._config`)::

    search_spaces/x.yaml: stem.act = 'gelu': Input should be 'relu', 'relu6' or 'h_swish'

Two families of layout are described: OFA's MobileNetV3 (``head.final_expand`` before the
pooling, a feature mix without BatchNorm after it) and OFA's ProxylessNAS (``head.final_expand``
absent, ``head.feature_mix_before_pool: true``: the feature mix, with BatchNorm and the head's
activation, before the pooling; its last stage has a fixed ``depth``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    Strict,
    ValidationInfo,
    field_validator,
    model_validator,
)

from nas._config import ConfigModel
from nas._io import read_yaml
from nas.errors import ConfigError

__all__ = ["HeadSpec", "LayerSpec", "Preprocessing", "SpaceSpec", "StageSpec", "load_spec"]

ACTIVATIONS = ("relu", "relu6", "h_swish")

Act = Literal["relu", "relu6", "h_swish"]
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
    """One stage: output width, stride of its first layer, activation, squeeze-excite.

    ``depth`` fixes the number of layers (only the last stage may, as OFA's ProxylessNAS
    space does with its single 320-channel block): that stage's depth is then no search
    variable, but its layers' kernels and expand ratios are elastic.
    """

    channels: PosInt
    stride: PosInt
    act: Act
    se: bool = False
    depth: PosInt | None = None


class HeadSpec(_Part):
    """The layers after the last stage.

    MobileNetV3 (``feature_mix_before_pool`` false): ``final_expand`` (1x1 conv + BN + act),
    global average pooling, ``feature_mix`` (1x1 conv without BN + act), classifier.
    ProxylessNAS (true, no ``final_expand``): ``feature_mix`` (1x1 conv + BN + act), pooling,
    classifier. ``act`` is the activation of the head's convolutions.
    """

    final_expand: PosInt | None = None
    feature_mix: PosInt
    feature_mix_before_pool: bool = False
    act: Act = "h_swish"
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0

    @model_validator(mode="after")
    def _one_layout(self) -> HeadSpec:
        if self.feature_mix_before_pool and self.final_expand is not None:
            raise ValueError("final_expand must be absent when feature_mix_before_pool is true")
        if not self.feature_mix_before_pool and self.final_expand is None:
            raise ValueError("final_expand is required unless feature_mix_before_pool is true")
        return self


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
    #: one line for listings (``nas spaces list``, ``nas plugins list``); empty: one is said
    #: by the space's shape (:attr:`~nas.space.SearchSpace.description`)
    description: str = ""
    #: the family of architectures: what plug-ins that apply to some spaces only name in
    #: their ``tags`` (OFA's convolutional family; other families have their own spec model)
    family: Literal["ofa"] = "ofa"
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
    #: BatchNorm epsilon of every layer (OFA: 1e-5 in MobileNetV3, 1e-3 in ProxylessNAS)
    bn_eps: Annotated[float, Field(gt=0.0, lt=1.0)] = 1e-5

    @field_validator("description")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if "\n" in value.strip():
            raise ValueError("must be one line")
        return value.strip()

    @field_validator("stages")
    @classmethod
    def _fixed_depth_last(cls, stages: tuple[StageSpec, ...],
                          info: ValidationInfo) -> tuple[StageSpec, ...]:
        # Keeping the fixed-depth stage last keeps layer slot j of an elastic stage at
        # stage * max_depth + layer, the layout every consumer of ks/e indexes by.
        depths = info.data.get("depths") or (1,)
        for s, st in enumerate(stages):
            if st.depth is None:
                continue
            if s != len(stages) - 1 or s == 0:
                raise ValueError(f"stage {s}: only the last stage (of two or more) may have "
                                 "a fixed depth")
            if st.depth > max(depths):
                raise ValueError(f"stage {s}: depth {st.depth} is more than max(depths) = "
                                 f"{max(depths)}")
        return stages


def spec_from_dict(raw: Any, where: str = "<dict>") -> ConfigModel:
    """Build and validate a spec from its YAML mapping: the model of its ``family``
    (:data:`~nas.space.FAMILIES`; ``ofa`` when absent). Errors name ``where`` and the field."""
    from nas.space._family import FAMILIES

    family = raw.get("family", "ofa") if isinstance(raw, dict) else "ofa"
    if isinstance(family, str) and family != "ofa" and family in FAMILIES:
        model: type[ConfigModel] = FAMILIES.get(family).Spec
        return model.from_dict(raw, where=where)
    if isinstance(family, str) and family not in FAMILIES:
        known = sorted(FAMILIES.names(), key=lambda n: (n != "ofa", n))
        raise ConfigError(f"{where}: family = {family!r}: Input should be "
                          f"{' or '.join(repr(n) for n in known)}")
    spec: SpaceSpec = SpaceSpec.from_dict(raw, where=where)
    return spec


def load_spec(path: Path | str) -> ConfigModel:
    """Read one ``search_spaces/*.yaml`` file, as its family's spec (any problem: one line
    naming file and field)."""
    return spec_from_dict(read_yaml(path, SpaceSpec.what), where=str(path))
