"""One shape for every plug-in point: a named registry of classes filled by a decorator.

Spaces, latency predictor kinds, accuracy predictors, proxies and samplers each keep one
:class:`Registry`. A plug-in is a class with a ``name`` (or another key attribute) that owns
all of its kind-specific behaviour; registering it is one decorator::

    @PREDICTORS.register
    class FlopsPredictor(LatencyPredictor):
        name = "flops"

Names shown to users (CLI help, API schemas, test parametrization) come from
:meth:`Registry.names`, never from a hand-written list. An unknown name raises
:class:`~nas.errors.UnknownNameError` listing the known ones; registering a name twice is an
error, not a silent replacement (timm's ``register_model``; Optuna's samplers).

Built-in plug-ins register themselves when their module is imported; ``builtins`` names those
modules so that the registry imports them on first use (and ``nas --help`` stays fast).
"""

from __future__ import annotations

import fnmatch
import importlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar

from nas._entry_points import (
    built_ins,
    load_entry_points,
    loading_entry_points,
    note_registered,
    plugin_source,
)
from nas.errors import ConfigError, UnknownNameError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Named plug-ins of one kind.

    Args:
        what: what a plug-in is, for messages (``"latency predictor kind"``).
        key: the class attribute holding a plug-in's name (``"name"`` or ``"kind"``).
        builtins: modules that register the built-in plug-ins when imported.
        checks: ``"module:attr"`` of this registry's own contract checks (a sequence of
            functions of a plug-in, or a function returning one), run by :mod:`nas.testing`
            after the checks every plug-in passes.
    """

    def __init__(self, what: str, *, key: str = "name", builtins: Sequence[str] = (),
                 checks: str = "") -> None:
        self.what = what
        self.key = key
        self.checks = checks
        self._builtins = tuple(builtins)
        self._loaded = False
        self._loading = False
        # Threads (the service's requests) may look a registry up for the first time at once:
        # the others wait until the built-ins are in, rather than see an empty registry.
        self._lock = threading.RLock()
        self._items: dict[str, T] = {}

    # ------------------------------------------------------------------ filling
    def register(self, item: T) -> T:
        """Decorator: register ``item`` under its ``key`` attribute; returns it unchanged.

        Raises:
            ConfigError: it has no name, or the name is taken.
        """
        name = getattr(item, self.key, None)
        return self.add(name, item)

    def add(self, name: Any, item: T) -> T:
        """Register ``item`` under ``name`` (for plug-ins that are not classes, e.g. spaces)."""
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{self.what} {item!r} has no {self.key!r} to register it under")
        if loading_entry_points():  # the built-ins first, so a plug-in cannot take their names
            self._load()
        if name in self._items:
            raise ConfigError(f"{self.what} {name!r} is already registered")
        self._items[name] = item
        note_registered(item)
        return item

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for tests and throwaway plug-ins); unknown names are an error."""
        self.get(name)
        del self._items[name]

    def _load(self) -> None:
        """The built-in plug-ins, then every package's ``nas.plugins`` entry points (once per
        process; see :mod:`nas._entry_points`)."""
        if self._loaded:
            return
        with self._lock:
            if self._loaded or self._loading:  # loaded meanwhile, or a lookup while loading
                return
            self._loading = True
            try:
                with built_ins():
                    for module in self._builtins:
                        importlib.import_module(module)
                load_entry_points()
            finally:
                self._loading = False
                self._loaded = True

    # ------------------------------------------------------------------ lookup
    def get(self, name: str) -> T:
        """The plug-in called ``name``.

        Raises:
            UnknownNameError: listing the known names.
        """
        self._load()
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise UnknownNameError(
                f"unknown {self.what} {name!r}; known: {', '.join(self.names()) or 'none'}"
            ) from None

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell-style ``pattern``, sorted."""
        self._load()
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def items(self) -> list[tuple[str, T]]:
        self._load()
        return sorted(self._items.items())

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load()
        return len(self._items)

    def source(self, name: str) -> str:
        """Where ``name`` comes from: ``"nas"`` for a built-in, else the distribution whose
        ``nas.plugins`` entry point registered it (for ``nas plugins list``)."""
        return plugin_source(self.get(name)).distribution

    def help(self, describe: Callable[[T], str] | None = None) -> str:
        """The names, one per ``name: description`` when ``describe`` is given (CLI help)."""
        if describe is None:
            return ", ".join(self.names())
        return "; ".join(f"{n}: {describe(v)}" for n, v in self.items())

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, {self.names()})"
