"""The device profile: how and where latency is measured, validated as one frozen model.

A profile names an inference setting (ONNX Runtime execution provider, threads, batch size,
precision, graph optimisation) and where it runs (this machine, or a Ray node that offers a
custom resource). Latencies measured under one profile are comparable with each other and
with nothing else, so the profile's name is the key of every measurement in the latency
database.

Every bad field is one line, the same as every other configuration of the package::

    pi4.yaml: precision = 'fp16': must be one of ['fp32', 'int8']

A profile is a plug-in of the one contract (:mod:`nas._plugin`) in the registry
:data:`~nas.devices.DEVICES`: its ``name``, a one-line ``description`` (when the file gives
none, one said by its settings: ``ONNX Runtime CPU, 1 thread, batch 1, fp32``), no
``Options`` (a profile is its own settings) and no ``tags`` (any space is timed on it), but
a profile with a language-model ``workload`` (prefill or decode) is tagged ``gpt``.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import yaml
from pydantic import ValidationError, ValidationInfo, field_validator, model_validator

from nas._config import ConfigModel, format_validation_error
from nas._plugin import NoOptions
from nas.errors import ConfigError

__all__ = [
    "CACHES",
    "EXECUTION_MODES",
    "GRAPH_OPTIMIZATIONS",
    "PHASES",
    "PLACEMENTS",
    "PRECISIONS",
    "PROVIDERS",
    "DeviceProfile",
    "Workload",
    "check_device_name",
]

PROVIDERS = ("CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider")
PRECISIONS = ("fp32", "int8")
GRAPH_OPTIMIZATIONS = ("disable", "basic", "extended", "all")
EXECUTION_MODES = ("sequential", "parallel")
PLACEMENTS = ("local", "ray")
PHASES = ("prefill", "decode")
CACHES = ("kv", "recompute")
_MAX_TOKENS = 1 << 20

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_NAME_RULE = (
    "1-64 characters of letters, digits, '.', '_' or '-', starting with a letter or digit"
)
_MAX_THREADS = 1024
_MAX_BATCH = 65536

_CHOICES = {
    "provider": PROVIDERS,
    "precision": PRECISIONS,
    "graph_optimization": GRAPH_OPTIMIZATIONS,
    "execution_mode": EXECUTION_MODES,
    "placement": PLACEMENTS,
}
_INT_RANGES = {
    "intra_op_threads": (1, _MAX_THREADS),
    "inter_op_threads": (1, _MAX_THREADS),
    "batch_size": (1, _MAX_BATCH),
}

_NO_NAME: Any = object()  # DeviceProfile() called without a positional name


class Workload(ConfigModel):
    """What one timed call of a language model does (a profile of the ``gpt`` family's).

    ``{phase: prefill, prompt: P}``: the prompt's P tokens in one call with an empty cache
    (time to the first token). ``{phase: decode, context: C}``: one new token whose cache
    already holds C - 1 positions (the C-th token's time; tokens per second is batch x
    1000 / ms); with ``cache: recompute`` the call recomputes all C positions without a cache
    (what a runtime without one pays per token).

    Attributes:
        phase: ``"prefill"`` or ``"decode"``.
        prompt: prefill's prompt length P (prefill only).
        context: decode's context C, the new token included (decode only; at least 2).
        cache: decode's ``"kv"`` (the exported KV-cache graph, the default) or
            ``"recompute"``.
    """

    what: ClassVar[str] = "workload"

    phase: str
    prompt: int | None = None
    context: int | None = None
    cache: str = "kv"

    @field_validator("phase", "cache", mode="before")
    @classmethod
    def _check_choice(cls, value: Any, info: ValidationInfo) -> Any:
        allowed = PHASES if info.field_name == "phase" else CACHES
        if not isinstance(value, str) or value not in allowed:
            raise ValueError(f"must be one of {list(allowed)}")
        return value

    @field_validator("prompt", "context", mode="before")
    @classmethod
    def _check_tokens(cls, value: Any, info: ValidationInfo) -> Any:
        low = 2 if info.field_name == "context" else 1
        if value is None:
            return None
        ok = isinstance(value, int) and not isinstance(value, bool)
        if not ok or not low <= value <= _MAX_TOKENS:
            raise ValueError(f"must be an integer in [{low}, {_MAX_TOKENS}]")
        return value

    @model_validator(mode="after")
    def _fields_of_the_phase(self) -> Workload:
        need, other = ("prompt", "context") if self.phase == "prefill" else ("context", "prompt")
        if getattr(self, need) is None:
            raise ValueError(f"a {self.phase} workload needs {need} (tokens)")
        if getattr(self, other) is not None:
            raise ValueError(f"{other} is for a {'decode' if other == 'context' else 'prefill'} "
                             f"workload; a {self.phase} workload takes {need}")
        if self.phase == "prefill" and self.cache != "kv":
            raise ValueError("cache is for a decode workload (prefill always starts empty)")
        return self

    @property
    def tokens(self) -> int:
        """The positions the call attends over: P for prefill, C for decode."""
        return int(self.prompt if self.phase == "prefill" else self.context)  # type: ignore[arg-type]

    def dims(self) -> dict[str, int]:
        """The exported graph's dynamic axes for one call: ``sequence`` (new tokens) and
        ``past_sequence`` (positions already in the cache)."""
        if self.phase == "prefill":
            return {"sequence": self.tokens, "past_sequence": 0}
        if self.cache == "recompute":
            return {"sequence": self.tokens, "past_sequence": 0}
        return {"sequence": 1, "past_sequence": self.tokens - 1}

    def describe(self) -> str:
        """``prefill 128 tokens`` / ``decode at context 512 (KV cache)``."""
        if self.phase == "prefill":
            return f"prefill {self.prompt} tokens"
        how = "KV cache" if self.cache == "kv" else "recomputed, no cache"
        return f"decode at context {self.context} ({how})"


def check_device_name(name: Any) -> str:
    """Return ``name`` if it is a valid device name, else raise :class:`ConfigError`.

    A name is also a file name: 1-64 characters from letters, digits, ``.``, ``_`` and ``-``,
    starting with a letter or digit.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(f"device name must be {_NAME_RULE}; got {name!r}")
    return name


def _where(raw: Any) -> str:
    name = raw.get("name") if isinstance(raw, dict) else None
    return f"device profile {name!r}" if isinstance(name, str) else "device profile"


class DeviceProfile(ConfigModel):
    """How and where latencies are measured; validated on construction.

    Built like a dataclass, the name first: ``DeviceProfile("pi4", intra_op_threads=4)``.
    A bad value raises :class:`~nas.errors.ConfigError` in one line.

    Attributes:
        name: the device's key in the latency database and its file name.
        provider: ONNX Runtime execution provider, one of :data:`PROVIDERS`.
        intra_op_threads: threads inside one operator (ORT ``intra_op_num_threads``).
        inter_op_threads: threads across operators (ORT ``inter_op_num_threads``).
        batch_size: images per inference call.
        precision: ``"fp32"`` or ``"int8"`` (a quantised model).
        graph_optimization: ORT graph optimisation level, one of :data:`GRAPH_OPTIMIZATIONS`.
        execution_mode: ORT execution mode, ``"sequential"`` or ``"parallel"``.
        allow_spinning: whether idle ORT threads spin (``session.intra_op.allow_spinning``).
        placement: ``"local"`` (this process' machine) or ``"ray"`` (a Ray task).
        ray_resource: with ``placement="ray"``, a Ray custom resource the task requests, so
            it lands on the node that is the device (e.g. ``"device:pi4"``).
        external: measurements are imported only; nothing can be measured from here.
        resolutions: the input resolutions its latency can be predicted at (e.g. those of a
            lookup table measured elsewhere), increasing; ``None``: any resolution.
        input_resolution: image spaces: every subnet is timed on images of this side
            (``batch x 3 x side x side``) instead of its own resolution, e.g. small inputs
            where per-operator overhead, not arithmetic, sets latency (as on a GPU at batch
            1); ``None``: each subnet at its own resolution.
        workload: for language models (a :class:`Workload`): what one timed call does,
            prefill at a prompt length or decode at a context; a profile with one times the
            ``gpt`` family's spaces only (its ``tags``).
        description: free text shown by ``nas devices list``; when none is given, one line
            said by the settings (:meth:`settings_description`), which :meth:`to_dict` and
            the YAML leave out (so that it follows the settings when they change).
    """

    what: ClassVar[str] = "device profile"
    #: a profile takes no options: it is its own settings (the plug-in contract)
    Options: ClassVar[type[ConfigModel]] = NoOptions

    name: str
    provider: str = "CPUExecutionProvider"
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    batch_size: int = 1
    precision: str = "fp32"
    graph_optimization: str = "all"
    execution_mode: str = "sequential"
    allow_spinning: bool = True
    placement: str = "local"
    ray_resource: str | None = None
    external: bool = False
    resolutions: list[int] | None = None
    workload: Workload | None = None
    input_resolution: int | None = None
    description: str = ""

    def __init__(self, name: Any = _NO_NAME, /, **fields: Any) -> None:
        if name is not _NO_NAME:
            if "name" in fields:
                raise TypeError("DeviceProfile() got the name both by position and by keyword")
            fields["name"] = name
        try:
            super().__init__(**fields)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, _where(fields))) from None

    # Pydantic's own mark (RootModel uses it): this __init__ only adds the positional name and
    # the one-line error, so model_validate (from_dict) validates without calling it and
    # reports its errors with the caller's ``where``.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    # Before-validators: the checks are ours (no "2" -> 2 or 1 -> True coercion, as the
    # hand-written checks before them did), the message format is nas._config's.
    @field_validator("name", mode="before")
    @classmethod
    def _check_name(cls, value: Any) -> Any:
        if not isinstance(value, str) or not _NAME_RE.match(value):
            raise ValueError(f"not a valid device name: {_NAME_RULE}")
        return value

    @field_validator(*_CHOICES, mode="before")
    @classmethod
    def _check_choice(cls, value: Any, info: ValidationInfo) -> Any:
        allowed = _CHOICES[str(info.field_name)]
        if not isinstance(value, str) or value not in allowed:
            raise ValueError(f"must be one of {list(allowed)}")
        return value

    @field_validator(*_INT_RANGES, mode="before")
    @classmethod
    def _check_int(cls, value: Any, info: ValidationInfo) -> Any:
        low, high = _INT_RANGES[str(info.field_name)]
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # YAML reads "2.0" as a float
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"must be an integer in [{low}, {high}]")
        return value

    @field_validator("allow_spinning", "external", mode="before")
    @classmethod
    def _check_bool(cls, value: Any) -> Any:
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
        return value

    @field_validator("ray_resource", mode="before")
    @classmethod
    def _check_resource_type(cls, value: Any) -> Any:
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ValueError("must be a non-empty string or null")
        return value

    @field_validator("ray_resource")
    @classmethod
    def _check_resource_placement(cls, value: str | None, info: ValidationInfo) -> str | None:
        placement = info.data.get("placement")
        if value is not None and placement is not None and placement != "ray":
            raise ValueError(f"needs placement 'ray', got placement {placement!r}")
        return value

    @field_validator("resolutions", mode="before")
    @classmethod
    def _check_resolutions(cls, value: Any) -> Any:
        if value is None:
            return None
        ok = isinstance(value, list | tuple) and len(value) > 0 and all(
            isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 4096 for v in value)
        if not ok or list(value) != sorted(set(value)):
            raise ValueError("must be null or a non-empty increasing list of ints in [1, 4096]")
        return list(value)

    @field_validator("input_resolution", mode="before")
    @classmethod
    def _check_input_resolution(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 8 <= value <= 4096:
            raise ValueError("must be null or an integer in [8, 4096] (an image's side)")
        return value

    @field_validator("description", mode="before")
    @classmethod
    def _check_description(cls, value: Any) -> Any:
        if value is None:
            return ""  # an empty `description:` line in YAML
        if not isinstance(value, str):
            raise ValueError("must be a string")
        return value

    @model_validator(mode="after")
    def _default_description(self) -> DeviceProfile:
        if self.input_resolution is not None and self.workload is not None:
            raise ValueError("input_resolution is for image subnets; a profile with a "
                             "language-model workload takes none")
        if not self.description.strip():
            # frozen: set once, while validating
            object.__setattr__(self, "description", self.settings_description())
        return self

    @property
    def tags(self) -> frozenset[str]:
        """The families it applies to (the plug-in contract): every one (no tags), or with
        a ``workload``, the ``gpt`` family's spaces only."""
        return frozenset({"gpt"}) if self.workload is not None else frozenset()

    @field_validator("workload", mode="before")
    @classmethod
    def _check_workload(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, dict | Workload):
            raise ValueError("must be null or a mapping such as {phase: decode, context: 512}")
        return value

    def settings_description(self) -> str:
        """One line said by the settings: ``ONNX Runtime CPU, 1 thread, batch 1, fp32``
        (then what differs from the usual: graph optimisation, Ray placement, external)."""
        provider = {"CPUExecutionProvider": "CPU", "CUDAExecutionProvider": "CUDA",
                    "TensorrtExecutionProvider": "TensorRT"}.get(self.provider, self.provider)
        n = self.intra_op_threads
        threads = f"{n} thread{'s' if n != 1 else ''}"
        if self.inter_op_threads != 1:
            threads += f" ({self.inter_op_threads} inter-op)"
        parts = [f"ONNX Runtime {provider}", threads, f"batch {self.batch_size}",
                 self.precision]
        if self.workload is not None:
            parts.append(self.workload.describe())
        if self.input_resolution is not None:
            parts.append(f"inputs {self.input_resolution}x{self.input_resolution}")
        if self.graph_optimization != "all":
            parts.append(f"graph optimisation {self.graph_optimization}")
        if self.placement == "ray":
            parts.append(f"on Ray ({self.ray_resource or 'any node'})")
        if self.external:
            parts.append("external (timings imported, nothing timed from here)")
        return ", ".join(parts)

    @classmethod
    def from_dict(cls, raw: Any, where: str | None = None) -> DeviceProfile:
        """Build a profile from a mapping, validating every field.

        Args:
            raw: a mapping with ``name`` and any of the other fields.
            where: what ``raw`` came from (e.g. a file name), prefixed to error messages.

        Raises:
            ConfigError: one line naming the field, the value and what is allowed.
        """
        profile: DeviceProfile = super().from_dict(raw, where or _where(raw))
        return profile

    def to_dict(self) -> dict[str, Any]:
        """All fields as a plain dict (JSON and YAML ready); ``description`` is empty when it
        is the one said by the settings (it is said again when read)."""
        out = self.model_dump()
        if self.workload is not None:  # only the phase's own fields
            out["workload"] = self.workload.model_dump(exclude_none=True)
        if out["description"] == self.settings_description():
            out["description"] = ""
        return out

    def replace(self, **changes: Any) -> DeviceProfile:
        """A copy with ``changes`` applied, validated like a new profile (a description said
        by the settings is said anew by the new ones)."""
        return type(self).from_dict({**self.to_dict(), **changes})

    def to_yaml(self) -> str:
        """The profile as a YAML document, its description repeated as a leading comment."""
        fields = self.to_dict()
        head = "".join(f"# {line}\n" for line in fields["description"].splitlines()
                       if line.strip())
        return head + yaml.safe_dump(fields, sort_keys=False)
