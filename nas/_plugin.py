"""The one plug-in contract, and plug-ins from other packages by entry point.

Every extension point of the package (search spaces, latency predictor kinds, accuracy
proxies, accuracy predictors, samplers, search engines, device profiles, data formats) is a
:class:`~nas._registry.Registry` whose entries all answer the same four questions:

``name``
    the key users type (``--kind additive``, ``--device cpu-1t``, ``-p ofa-imagenet``):
    1-64 characters of lowercase letters, digits, ``.``, ``_`` or ``-``.
``description``
    one line for listings, ``--help`` and API schemas.
``Options``
    a :class:`~nas._config.ConfigModel` subclass of its typed options (``NoOptions`` when it
    has none): every option has a default, an unknown option is refused in one line.
``tags``
    where a plug-in applies only to some search spaces, the space families it applies to
    (``{"ofa"}``); empty, it applies to every space.

A class plug-in subclasses :class:`Plugin`; an instance plug-in (a space, a device profile)
carries the same attributes. ``nas.testing`` ships the checks of this contract (and each
registry's own checks) for third-party plug-ins to run in their tests, as scikit-learn ships
``parametrize_with_checks``.

Another package adds plug-ins without editing this one by declaring an entry point in the
``nas.plugins`` group whose value is a module (imported; its decorators register what it
defines) or a callable (called with no arguments)::

    [project.entry-points."nas.plugins"]
    my_kinds = "my_package.nas_plugins"

Entry points are loaded once, on the first lookup in any registry. One that fails to import
is reported in one line on stderr and skipped: a broken third-party plug-in never takes
``nas`` down with it.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from nas._config import ConfigModel
from nas._entry_points import (
    ENTRY_POINT_GROUP,
    PluginSource,
    load_entry_points,
    loaded_entry_points,
    plugin_source,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "NAME_RULE",
    "NoOptions",
    "Plugin",
    "PluginSource",
    "applies_to",
    "check_plugin_name",
    "load_entry_points",
    "loaded_entry_points",
    "plugin_source",
]

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
NAME_RULE = "1-64 characters of lowercase letters, digits, '.', '_' or '-'"


class NoOptions(ConfigModel):
    """The options of a plug-in that takes none."""

    what: ClassVar[str] = "options"


class Plugin:
    """Base of class plug-ins: the four attributes every registry's entries have."""

    #: the registry key users type
    name: ClassVar[str] = ""
    #: one line for listings, ``--help`` and API schemas
    description: ClassVar[str] = ""
    #: the typed options (every field with a default)
    Options: ClassVar[type[ConfigModel]] = NoOptions
    #: the space families it applies to; empty: every space
    tags: ClassVar[frozenset[str]] = frozenset()


def check_plugin_name(name: object) -> str | None:
    """What is wrong with ``name`` as a plug-in name, or ``None``."""
    if not isinstance(name, str):
        return f"name must be a string, got {type(name).__name__}"
    if not NAME_RE.match(name):
        return f"name {name!r} is not {NAME_RULE}"
    return None


def applies_to(plugin: Any, family: str | None) -> bool:
    """Whether ``plugin`` applies to spaces of ``family`` (its tags empty, or naming it)."""
    tags: frozenset[str] = getattr(plugin, "tags", frozenset())
    return not tags or family in tags
