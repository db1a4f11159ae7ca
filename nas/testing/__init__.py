"""The plug-in contract's checks, shipped so that third-party plug-ins can run them.

Every registry's entries must pass the checks of the shared contract (:mod:`nas._plugin`:
a name, a one-line description, typed options with defaults, tags) and the registry's own
checks (a latency kind must fit and predict, a sampler must build an Optuna sampler...).
In a plug-in package's tests, as with scikit-learn's ``parametrize_with_checks``::

    from nas.latency import PREDICTORS
    from nas.testing import parametrize_with_checks

    @parametrize_with_checks(PREDICTORS, ["my-kind"])
    def test_my_kind(plugin, check):
        check(plugin)

or in one call, raising ``AssertionError`` that lists every failed check::

    from nas.testing import check_plugin
    check_plugin(PREDICTORS, "my-kind")
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from nas._config import ConfigModel
from nas._plugin import check_plugin_name
from nas._registry import Registry
from nas.errors import ConfigError

__all__ = ["Check", "check_plugin", "contract_checks", "parametrize_with_checks", "plugin_checks"]

#: a check: called with the plug-in, raises ``AssertionError`` saying what is wrong
Check = Callable[[Any], None]


def _require(condition: object, message: str) -> None:
    """``AssertionError(message)`` unless ``condition`` (not ``assert``: it vanishes under
    ``python -O``)."""
    if not condition:
        raise AssertionError(message)


def _name(registry: Registry[Any], plugin: Any) -> Any:
    return getattr(plugin, "name", getattr(plugin, registry.key, None))


# ------------------------------------------------------------------ the shared contract
def check_name(plugin: Any) -> None:
    """The name is a valid plug-in name."""
    problem = check_plugin_name(getattr(plugin, "name", None))
    _require(problem is None, f"{plugin!r}: {problem}")


def check_description(plugin: Any) -> None:
    """The description is one non-empty line of at most 160 characters."""
    text = getattr(plugin, "description", None)
    if not isinstance(text, str):
        raise AssertionError(f"{plugin!r}: description must be a string, got {text!r}")
    _require(text.strip(), f"{plugin!r}: description is empty")
    _require("\n" not in text.strip(), f"{plugin!r}: description must be one line: {text!r}")
    _require(len(text) <= 160, f"{plugin!r}: description is {len(text)} characters (max 160)")


def check_options(plugin: Any) -> None:
    """``Options`` is a ConfigModel whose every field has a default, that refuses an unknown
    field in one line."""
    model = getattr(plugin, "Options", None)
    if not (isinstance(model, type) and issubclass(model, ConfigModel)):
        raise AssertionError(f"{plugin!r}: Options must be a nas._config.ConfigModel "
                             f"subclass, got {model!r}")
    required = [k for k, f in model.model_fields.items() if f.is_required()]
    _require(not required, f"{plugin!r}: options without a default: {required}")
    try:
        model.from_dict({})
    except ConfigError as exc:  # pragma: no cover - a default that fails its own validation
        raise AssertionError(f"{plugin!r}: the default options are invalid: {exc}") from None
    try:
        model.from_dict({"no_such_option_": 1}, where="options")
    except ConfigError as exc:
        _require("\n" not in str(exc), f"{plugin!r}: an option error is not one line: {exc}")
    else:
        raise AssertionError(f"{plugin!r}: Options accepts an unknown option")


def check_tags(plugin: Any) -> None:
    """``tags`` is a frozenset of non-empty strings (the space families it applies to)."""
    tags = getattr(plugin, "tags", None)
    if not isinstance(tags, frozenset):
        raise AssertionError(f"{plugin!r}: tags must be a frozenset, got {tags!r}")
    _require(all(isinstance(t, str) and t for t in tags), f"{plugin!r}: bad tags {tags!r}")


CONTRACT: tuple[Check, ...] = (check_name, check_description, check_options, check_tags)


def contract_checks() -> tuple[Check, ...]:
    """The checks every plug-in of every registry passes."""
    return CONTRACT


# ------------------------------------------------------------------ per registry
def _registry_checks(registry: Registry[Any]) -> list[Check]:
    """The registry's own checks (``Registry(checks="module:attr")``: a sequence of checks,
    or a function returning one)."""
    spec = getattr(registry, "checks", None)
    if not spec:
        return []
    module, _, attr = spec.partition(":")
    found = getattr(importlib.import_module(module), attr)
    return list(found() if callable(found) else found)


def plugin_checks(registry: Registry[Any], plugin: Any) -> Iterator[Check]:
    """Every check ``plugin`` must pass to be an entry of ``registry``: the registration
    round trip, the shared contract, then the registry's own."""
    def check_registered(p: Any) -> None:
        name = _name(registry, p)
        _require(name in registry, f"{p!r} is not registered in {registry!r}")
        got = registry.get(name)
        # an instance plug-in read anew from its file (a device profile) is equal, not the same
        _require(got is p or (not isinstance(p, type) and got == p),
                 f"{registry.what} {name!r} is another object than {p!r}")

    yield check_registered
    yield from CONTRACT
    yield from _registry_checks(registry)


def check_plugin(registry: Registry[Any], plugin: Any) -> None:
    """Run every check on ``plugin`` (or the entry called so); ``AssertionError`` lists
    every one that failed."""
    if isinstance(plugin, str):
        plugin = registry.get(plugin)
    failed = []
    for check in plugin_checks(registry, plugin):
        try:
            check(plugin)
        except AssertionError as exc:
            failed.append(f"{check.__name__}: {exc}")
    if failed:
        raise AssertionError(f"{registry.what} {_name(registry, plugin)!r} fails "
                             f"{len(failed)} check(s):\n" + "\n".join(failed))


def parametrize_with_checks(registry: Registry[Any], names: Sequence[str] | None = None) -> Any:
    """A ``pytest.mark.parametrize`` over (plug-in, check) pairs: every entry of
    ``registry`` (or those called ``names``) with every check, ids ``name-check``."""
    import pytest

    chosen = registry.names() if names is None else list(names)
    cases = []
    for name in chosen:
        plugin = registry.get(name)
        for check in plugin_checks(registry, plugin):
            cases.append(pytest.param(plugin, check, id=f"{name}-{check.__name__}"))
    return pytest.mark.parametrize(("plugin", "check"), cases)
