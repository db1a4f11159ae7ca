"""Registry of search spaces by name (timm's register/create/list pattern).

A space is data: adding one is one YAML file in ``search_spaces/`` (shipped in ``nas._data``
in a wheel), read on first use, or a :func:`register_space` call at run time with a spec or
a YAML file. Every registered space is then tested by ``tests/space/test_space_contract.py``
(the plug-in contract and the spaces' own checks, :mod:`nas.space._checks`, through
:func:`nas.testing.parametrize_with_checks`).
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

from nas._config import ConfigModel
from nas._registry import Registry
from nas.space._family import FAMILIES, FamilySpace
from nas.space._space import SearchSpace
from nas.space._spec import load_spec

__all__ = ["SPACES", "get_family_space", "get_space", "list_spaces", "register_space",
           "space_from_spec"]

#: the registered spaces; the shipped ones are registered by ``nas.space._shipped``
SPACES: Registry[FamilySpace] = Registry("search space", builtins=["nas.space._shipped"],
                                         checks="nas.space._checks:CHECKS")


def space_from_spec(spec: ConfigModel) -> FamilySpace:
    """The space of ``spec``, built by its family (:data:`~nas.space.FAMILIES`)."""
    return FAMILIES.get(str(getattr(spec, "family", "ofa"))).make_space(spec)


def register_space(spec: ConfigModel | Path | str) -> SearchSpace:
    """Register a space from a spec (of any family) or a YAML file; a duplicate name is an
    error.

    Raises:
        ConfigError: a bad spec file, or the name is taken.
    """
    if not isinstance(spec, ConfigModel):
        spec = load_spec(spec)
    len(SPACES)  # the shipped spaces first, so that their names count as taken
    return cast(SearchSpace, SPACES.add(str(getattr(spec, "name", "")), space_from_spec(spec)))


def get_space(name: str | FamilySpace) -> SearchSpace:
    """The registered space called ``name``, the space object of its family (a space passes
    through): a :class:`SearchSpace` for the ``ofa`` family, a
    :class:`~nas.space.GPTSpace` for ``gpt``.

    Typed as the OFA space while the layers above still reach into ``ks/e/d/r`` (issue 25
    wires them to :class:`~nas.space.FamilySpace`); use :func:`get_family_space` in code that
    takes any family.

    Raises:
        UnknownNameError: listing the known names.
    """
    return cast(SearchSpace, get_family_space(name))


def get_family_space(name: str | FamilySpace) -> FamilySpace:
    """The registered space called ``name``, of whatever family (a space passes through).

    Raises:
        UnknownNameError: listing the known names.
    """
    if isinstance(name, FamilySpace):
        return name
    return SPACES.get(name)


def list_spaces(pattern: str = "*") -> list[str]:
    """Names of registered spaces matching a shell-style ``pattern``, sorted."""
    return SPACES.names(pattern)
