"""Registry of search spaces by name (timm's register/create/list pattern).

Spaces shipped with the package are read from ``search_spaces/*.yaml`` (``nas._data`` in a
wheel) on first use; more can be registered at run time from a spec or a YAML file.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import yaml

from nas._data import data_dir
from nas.errors import ConfigError, UnknownNameError
from nas.space._space import SearchSpace
from nas.space._spec import SpaceSpec, load_spec, spec_from_dict

__all__ = ["get_space", "list_spaces", "register_space"]

_SPACES: dict[str, SearchSpace] = {}
_BUILTINS_LOADED = False


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    for entry in sorted(data_dir("search_spaces").iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".yaml"):
            spec = spec_from_dict(yaml.safe_load(entry.read_text()), where=entry.name)
            register_space(spec)


def register_space(spec: SpaceSpec | Path | str) -> SearchSpace:
    """Register a space from a spec or a YAML file; a duplicate name is an error."""
    _load_builtins()
    if not isinstance(spec, SpaceSpec):
        spec = load_spec(spec)
    if spec.name in _SPACES:
        raise ConfigError(f"search space {spec.name!r} is already registered")
    space = SearchSpace(spec)
    _SPACES[spec.name] = space
    return space


def get_space(name: str | SearchSpace) -> SearchSpace:
    """The registered space called ``name``.

    Raises:
        UnknownNameError: listing the known names.
    """
    if isinstance(name, SearchSpace):
        return name
    _load_builtins()
    try:
        return _SPACES[name]
    except KeyError:
        raise UnknownNameError(
            f"unknown search space {name!r}; known spaces: {', '.join(sorted(_SPACES))}"
        ) from None


def list_spaces(pattern: str = "*") -> list[str]:
    """Names of registered spaces matching a shell-style ``pattern``."""
    _load_builtins()
    return sorted(n for n in _SPACES if fnmatch.fnmatch(n, pattern))
