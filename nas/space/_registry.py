"""Registry of search spaces by name (timm's register/create/list pattern).

A space is data: adding one is one YAML file in ``search_spaces/`` (shipped in ``nas._data``
in a wheel), read on first use, or a :func:`register_space` call at run time with a spec or
a YAML file. Every registered space is then tested by ``tests/space/test_space_contract.py``
(the plug-in contract and the spaces' own checks, :mod:`nas.space._checks`, through
:func:`nas.testing.parametrize_with_checks`).
"""

from __future__ import annotations

from pathlib import Path

from nas._registry import Registry
from nas.space._space import SearchSpace
from nas.space._spec import SpaceSpec, load_spec

__all__ = ["SPACES", "get_space", "list_spaces", "register_space"]

#: the registered spaces; the shipped ones are registered by ``nas.space._shipped``
SPACES: Registry[SearchSpace] = Registry("search space", builtins=["nas.space._shipped"],
                                         checks="nas.space._checks:CHECKS")


def register_space(spec: SpaceSpec | Path | str) -> SearchSpace:
    """Register a space from a spec or a YAML file; a duplicate name is an error.

    Raises:
        ConfigError: a bad spec file, or the name is taken.
    """
    if not isinstance(spec, SpaceSpec):
        spec = load_spec(spec)
    len(SPACES)  # the shipped spaces first, so that their names count as taken
    return SPACES.add(spec.name, SearchSpace(spec))


def get_space(name: str | SearchSpace) -> SearchSpace:
    """The registered space called ``name`` (a space passes through).

    Raises:
        UnknownNameError: listing the known names.
    """
    if isinstance(name, SearchSpace):
        return name
    return SPACES.get(name)


def list_spaces(pattern: str = "*") -> list[str]:
    """Names of registered spaces matching a shell-style ``pattern``, sorted."""
    return SPACES.names(pattern)
