"""One way to validate configuration: frozen pydantic models with one-line errors.

Training configs, search configs, space specs, device profiles and timing settings are all
:class:`ConfigModel` subclasses. Whatever is wrong, the user sees one line naming where the
value came from, the field, the value and what is allowed::

    experiments/x.yaml: optim.lr = -1.0: must be > 0

The same format everywhere, because every model goes through :func:`validate`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from nas._io import read_yaml
from nas.errors import ConfigError

__all__ = ["ConfigModel", "finite", "format_validation_error", "validate"]

M = TypeVar("M", bound=BaseModel)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _prefixed(where: str, msg: str) -> str:
    """``where: msg``, unless ``msg`` says where already (a line made by a nested check)."""
    return msg if msg.startswith(f"{where}: ") else f"{where}: {msg}"


def format_validation_error(exc: ValidationError, where: str) -> str:
    """The first error of ``exc`` as one line: ``where: field = value: message`` (``where:
    message`` for an error of the whole model, e.g. two fields that do not fit together)."""
    err = exc.errors()[0]
    msg = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if not err["loc"]:
        return _prefixed(where, msg)
    field = ".".join(str(x) for x in err["loc"])
    shown = "" if err["type"] == "missing" else f" = {_shown(err.get('input'))}"
    if err["type"] == "extra_forbidden":
        shown, msg = "", "unknown field"
    return f"{where}: {field}{shown}: {msg}"


def validate(cls: type[M], raw: Any, where: str) -> M:
    """``cls.model_validate(raw)``, with any error as one :class:`ConfigError` line."""
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where)) from None
    except ConfigError as exc:  # raised by a validator (or a model's own __init__)
        raise ConfigError(_prefixed(where, str(exc))) from None


class ConfigModel(BaseModel):
    """Base of configuration models: frozen, unknown fields refused, NaN and inf refused."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    #: what a file of this model is called in messages ("training config")
    what: ClassVar[str] = "config"

    @classmethod
    def from_dict(cls, raw: Any, where: str | None = None) -> Self:
        """Validate a mapping; errors are one line prefixed with ``where``."""
        if not isinstance(raw, dict):
            raise ConfigError(f"{where or cls.what} must be a mapping of fields, got "
                              f"{type(raw).__name__}")
        return validate(cls, raw, where or cls.what)

    @classmethod
    def load(cls, path: Path | str) -> Self:
        """Read and validate a YAML file (missing, unreadable, non-UTF-8, bad YAML: one line)."""
        return cls.from_dict(read_yaml(path, cls.what), where=str(path))


def finite(value: float, what: str = "value") -> float:
    """``value`` if finite; a ``ValueError`` (shown by :func:`validate`) otherwise."""
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite")
    return value
