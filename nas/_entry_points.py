"""Plug-ins from other packages: the ``nas.plugins`` entry points, loaded once.

A foundation module (no configuration, no heavy import): :class:`~nas._registry.Registry`
calls :func:`load_entry_points` before its first lookup, and notes where each entry came from
(:func:`plugin_source`) for ``nas plugins list``. The contract the plug-ins follow is in
:mod:`nas._plugin`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata

__all__ = ["ENTRY_POINT_GROUP", "PluginSource", "built_ins", "load_entry_points",
           "loaded_entry_points", "loading_entry_points", "note_registered", "plugin_source"]

#: the entry-point group other packages declare their plug-ins in
ENTRY_POINT_GROUP = "nas.plugins"


@dataclass(frozen=True)
class PluginSource:
    """Where a registered plug-in came from, for listings."""

    #: ``"nas"`` for the built-in ones, else the distribution that declared the entry point
    distribution: str
    #: the entry point's name (empty for built-ins)
    entry_point: str = ""


_loaded: dict[str, PluginSource] | None = None
_sources: dict[int, PluginSource] = {}
_failures: list[str] = []


def load_entry_points() -> None:
    """Import every ``nas.plugins`` entry point once per process (later calls do nothing).

    A plug-in registered while an entry point loads is attributed to its distribution.
    """
    global _loaded
    if _loaded is not None:
        return
    _loaded = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "unknown"
        source = PluginSource(dist, ep.name)
        _loaded[ep.name] = source
        _current.append(source)
        try:
            obj = ep.load()
            if callable(obj):
                obj()
        except Exception as exc:  # a third party's bug: reported, never fatal
            line = (f"warning: plug-in entry point {ep.name!r} ({dist}) failed to load: "
                    f"{type(exc).__name__}: {exc}; skipped")
            _failures.append(line)
            print(line, file=sys.stderr)
        finally:
            _current.pop()


#: the entry points being loaded, innermost last; None while built-ins load inside one
_current: list[PluginSource | None] = []


def loading_entry_points() -> bool:
    """Whether a ``nas.plugins`` entry point is being imported now."""
    return bool(_current)


@contextmanager
def built_ins() -> Iterator[None]:
    """What registers inside is a built-in, even while an entry point loads (a plug-in's
    ``import nas.latency`` imports the built-in kinds on the way)."""
    _current.append(None)
    try:
        yield
    finally:
        _current.pop()


def _is_built_in(item: object) -> bool:
    """A class defined in ``nas`` itself (imported while a plug-in loads: still built in)."""
    module = getattr(item, "__module__", "") if isinstance(item, type) else ""
    return module == "nas" or module.startswith("nas.")


def note_registered(item: object) -> None:
    """Called by :class:`~nas._registry.Registry` for each new entry: remember its source
    (the entry point being loaded, unless the item is a built-in)."""
    if _current and _current[-1] is not None and not _is_built_in(item):
        _sources[id(item)] = _current[-1]


def plugin_source(item: object) -> PluginSource:
    """The distribution (and entry point) a registered plug-in came from."""
    return _sources.get(id(item), PluginSource("nas"))


def loaded_entry_points() -> tuple[dict[str, PluginSource], list[str]]:
    """The entry points loaded (name -> source) and the one-line reports of those that
    failed."""
    load_entry_points()
    return dict(_loaded or {}), list(_failures)
