"""The one plug-in contract, and plug-ins from other packages by entry point.

Every extension point of the package (search spaces, latency predictor kinds, accuracy
proxies, accuracy predictors, samplers, search engines, device profiles, data formats) is a
:class:`~nas._registry.Registry` whose entries all answer the same four questions:

``name``
    the key users type (``--kind additive``, ``--device cpu-1t``, ``-p ofa-imagenet``):
    1-64 characters of letters, digits, ``.``, ``_`` or ``-``, starting with a letter or digit
    (:data:`NAME_RULE`; a device profile may be called ``Pixel4``).
``description``
    one line for listings, ``--help`` and API schemas.
``Options``
    a :class:`~nas._config.ConfigModel` subclass of its typed options (``NoOptions`` when it
    has none): every option has a default, an unknown option is refused in one line.
``tags``
    where a plug-in applies only to some search spaces, the space families it applies to
    (``{"ofa"}``), or the spaces themselves by name where it applies to fewer than a whole
    family (``{"ofa_mbv3"}``: OFA's ImageNet accuracy predictor); empty, it applies to every
    space. A plug-in applies to a space when its tags name the space's family or the space
    (:func:`applies_to`); family names and space names are one namespace (no space is called
    after a family).

A class plug-in subclasses :class:`Plugin`; an instance plug-in (a space, a device profile)
carries the same attributes. A plug-in class that is also a scikit-learn estimator (a latency
predictor kind, an accuracy predictor) subclasses :class:`KindPlugin`: its ``name`` is also
its ``kind`` (the value saved files and the database store), and its ``Options`` are made
from the keyword-only parameters of its ``__init__`` (:func:`options_from_init`).
``nas.testing`` ships the checks of this contract (and each registry's own checks) for
third-party plug-ins to run in their tests, as scikit-learn ships ``parametrize_with_checks``.

Another package adds plug-ins without editing this one by declaring an entry point in the
``nas.plugins`` group whose value is a module (imported; its decorators register what it
defines) or a callable (called with no arguments)::

    [project.entry-points."nas.plugins"]
    my_kinds = "my_package.nas_plugins"

Entry points are loaded once, on the first lookup in any registry. One that fails to import
is reported in one line on stderr and skipped: a broken third-party plug-in never takes
``nas`` down with it.

:data:`REGISTRIES` names every registry as ``(label, "module:ATTR")``, imported only when
listed: :func:`list_plugins` gives one row per plug-in of every registry (``nas plugins
list``).
"""

from __future__ import annotations

import importlib
import inspect
import re
import typing
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import pydantic

from nas._config import ConfigModel
from nas._entry_points import (
    ENTRY_POINT_GROUP,
    PluginSource,
    load_entry_points,
    loaded_entry_points,
    plugin_source,
)
from nas.errors import ConfigError

__all__ = [
    "ENTRY_POINT_GROUP",
    "NAME_RULE",
    "REGISTRIES",
    "KindPlugin",
    "NoOptions",
    "Plugin",
    "PluginSource",
    "applies_to",
    "check_estimator_options",
    "check_plugin_name",
    "list_plugins",
    "load_entry_points",
    "loaded_entry_points",
    "options_from_init",
    "plugin_source",
]

#: what a plug-in's name is: the devices' rule (a name may also be a file name)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
NAME_RULE = "1-64 characters of letters, digits, '.', '_' or '-', starting with a letter or digit"


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


def options_from_init(cls: type, base: type[ConfigModel] = ConfigModel) -> type[ConfigModel]:
    """A ``base`` subclass with a field per parameter of ``cls.__init__`` (its annotation and
    default; a parameter without a default is a required field, which the contract refuses),
    or :class:`NoOptions` when it takes none: a scikit-learn estimator's hyper-parameters as
    its ``Options``."""
    init = cls.__init__  # type: ignore[misc]
    try:
        sig = inspect.signature(init)
    except (TypeError, ValueError):
        return NoOptions
    params = [p for n, p in sig.parameters.items() if n != "self"
              and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not params:
        return NoOptions
    try:
        hints = typing.get_type_hints(init)
    except Exception:  # an annotation that does not resolve: the field takes anything
        hints = {}

    def fields(typed: bool) -> dict[str, Any]:
        return {p.name: (hints.get(p.name, Any) if typed else Any,
                         ... if p.default is p.empty else p.default) for p in params}

    name = f"{cls.__name__}Options"
    try:
        return pydantic.create_model(name, __base__=base, __module__=cls.__module__,
                                     **fields(True))
    except (pydantic.PydanticSchemaGenerationError, TypeError):  # e.g. an ndarray annotation
        return pydantic.create_model(name, __base__=base, __module__=cls.__module__,
                                     **fields(False))


class KindPlugin(Plugin):
    """Base of class plug-ins that are estimators: ``name`` and ``kind`` are one value (a
    class sets either), and ``Options`` is made from ``__init__``'s parameters when the class
    is defined (:func:`options_from_init`, on :attr:`options_base`), unless it sets its own.
    """

    #: the same value as ``name``: the key stored with a saved estimator
    kind: ClassVar[str] = ""
    #: the base of the ``Options`` made from ``__init__`` (its ``what`` names it in messages)
    options_base: ClassVar[type[ConfigModel]] = ConfigModel

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """``name`` and ``kind`` made one value, and ``Options`` made from ``__init__``."""
        super().__init_subclass__(**kwargs)
        own = vars(cls)
        name, kind = str(own.get("name") or ""), str(own.get("kind") or "")
        if name and kind and name != kind:
            raise TypeError(f"{cls.__name__}: name {name!r} and kind {kind!r} must be one "
                            "value (set one of them)")
        if name or kind:
            cls.name = cls.kind = name or kind
        if "Options" not in own:
            cls.Options = options_from_init(cls, cls.options_base)


def check_plugin_name(name: object) -> str | None:
    """What is wrong with ``name`` as a plug-in name, or ``None``."""
    if not isinstance(name, str):
        return f"name must be a string, got {type(name).__name__}"
    if not NAME_RE.match(name):
        return f"name {name!r} is not {NAME_RULE}"
    return None


def check_estimator_options(cls: type, create: Callable[..., object]) -> None:
    """The contract of a scikit-learn-style plug-in's parameters (latency kinds, accuracy
    predictors): ``__init__`` takes keyword-only parameters with defaults, ``space`` among
    them; ``Options`` has a field per parameter with the same default; ``create(**options)``
    refuses an unknown parameter in one line naming it. ``AssertionError`` says what is wrong."""
    def expect(ok: object, message: str) -> None:
        if not ok:  # not `assert`: the check must hold under `python -O` too
            raise AssertionError(message)

    params = {n: p for n, p in inspect.signature(cls.__init__).parameters.items()  # type: ignore[misc]
              if n != "self"}
    expect("space" in params, f"{cls.__name__}() takes no space")
    for p in params.values():
        expect(p.kind is p.KEYWORD_ONLY and p.default is not p.empty,
               f"{cls.__name__}: parameter {p.name!r} must be keyword-only with a default")
    fields = cls.Options.model_fields  # type: ignore[attr-defined]
    expect(set(fields) == set(params), f"{cls.__name__}.Options has fields {sorted(fields)}, "
           f"__init__ takes {sorted(params)}")
    for n, p in params.items():
        got = fields[n].default
        expect(got is p.default or got == p.default,
               f"{cls.__name__}.Options.{n} defaults to {got!r}, __init__ to {p.default!r}")
    try:
        create(no_such_parameter_=1)
    except ConfigError as exc:
        expect("\n" not in str(exc) and "no_such_parameter_" in str(exc),
               f"an unknown parameter gave {str(exc)!r}, not one line naming it")
    else:
        raise AssertionError(f"{cls.__name__}: an unknown parameter was taken")


def applies_to(plugin: Any, family: str | None, space: str | None = None) -> bool:
    """Whether ``plugin`` applies to the space ``space`` of ``family``: its tags are empty, or
    name the family, or name the space. Without ``space``, whether it applies to every space
    of ``family`` (a plug-in tagged with some spaces of it only does not)."""
    tags: frozenset[str] = getattr(plugin, "tags", frozenset())
    return not tags or family in tags or (space is not None and space in tags)


# ---------------------------------------------------------------------- every registry
#: Every registry of the package, as ``(label, "module:ATTR")``: ``nas plugins list
#: --registry LABEL``; strings, so that naming them imports nothing.
REGISTRIES: tuple[tuple[str, str], ...] = (
    ("spaces", "nas.space:SPACES"),
    ("space-families", "nas.space:FAMILIES"),
    ("latency-kinds", "nas.latency:PREDICTORS"),
    ("devices", "nas.devices:DEVICES"),
    ("data-formats", "nas.train:DATA_FORMATS"),
    ("proxies", "nas.proxies:PROXIES"),
    ("accuracy-predictors", "nas.proxies:ACCURACY_PREDICTORS"),
    ("samplers", "nas.search:SAMPLERS"),
    ("engines", "nas.search:ENGINES"),
)


def registry_labels() -> list[str]:
    """The labels of :data:`REGISTRIES`, in order."""
    return [label for label, _ in REGISTRIES]


def _import(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _description(item: Any) -> str:
    """The plug-in's ``description``; for one that has none yet, its docstring's first line."""
    text = getattr(item, "description", None)
    if isinstance(text, str) and text.strip():
        return text.strip()
    doc = (getattr(item, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""


def list_plugins(labels: Sequence[str] | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per plug-in of each registry (every one, or those of ``labels``): ``registry``,
    ``name``, ``description``, ``tags`` and ``source`` (``"nas"``, ``"user"`` for a user's
    device file, or the distribution that registered it).

    Returns:
        The rows, and one warning line for each registry that could not be imported and
        each ``nas.plugins`` entry point that failed to load (already reported on stderr
        when it failed).

    Raises:
        UnknownNameError: a label that is not one of :data:`REGISTRIES`.
    """
    from nas.errors import UnknownNameError

    known = registry_labels()
    chosen = known if labels is None else list(labels)
    bad = [x for x in chosen if x not in known]
    if bad:
        raise UnknownNameError(f"unknown registry {bad[0]!r}; known: {', '.join(known)}")
    rows: list[dict[str, Any]] = []
    warnings: list[str] = []
    for label, target in REGISTRIES:
        if label not in chosen:
            continue
        try:
            registry = _import(target)
            items = registry.items()
        except Exception as exc:  # e.g. an optional dependency missing: the others still list
            warnings.append(f"warning: registry {label!r} ({target}) could not be loaded: "
                            f"{type(exc).__name__}: {exc}")
            continue
        for name, item in items:
            rows.append({"registry": label, "name": name, "description": _description(item),
                         "tags": sorted(getattr(item, "tags", ())),
                         "source": registry.source(name)})
    return rows, warnings + loaded_entry_points()[1]
