"""The proxy interface, the context proxies score in, and the registry of proxies by name.

A proxy scores a batch of architectures with one number each; **higher always means
predicted better**. Each proxy fixes its sign in advance (``params`` and ``macs`` count up,
``synflow``, ``naswot`` and ``zico`` are the published scores, ``inherited`` and
``predictor`` are accuracies), so a rank correlation with accuracy is read as it is, never
through ``abs()``.

Example:
    >>> ctx = ProxyContext.build("cifar_mbv3", checkpoint="runs/x/supernet.safetensors",
    ...                          data="../shared/data/cifar10-jpeg.tar.gz")
    >>> get_proxy("synflow").score(archs, ctx)
    >>> get_proxy("zico:weights=inherited").score(archs, ctx)
"""

from __future__ import annotations

import functools
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import numpy as np
from pydantic import AfterValidator, BeforeValidator, create_model

from nas._config import ConfigModel, validate
from nas._plugin import Plugin
from nas._registry import Registry
from nas.errors import ConfigError, NASError
from nas.proxies._cache import ProxyCache, checkpoint_sha256, default_cache_path
from nas.space import ArchArrays, Architecture, SearchSpace, get_space

if TYPE_CHECKING:  # torch when a proxy runs a network: OFA's predictor and MACs need none
    import torch

    from nas.supernet import OFASupernet
    from nas.train import DataSplits, Preprocess

__all__ = [
    "PROXIES",
    "Proxy",
    "ProxyContext",
    "get_proxy",
    "list_proxies",
    "parse_proxy_spec",
    "proxy_class",
    "register_proxy",
]


@dataclass
class ProxyContext:
    """What proxies may need: the space, a trained supernet, the data, and settings.

    Attributes:
        supernet: the trained supernet (``inherited``, ``predictor`` and zero-cost proxies with
            ``weights=inherited`` need it).
        checkpoint: its file; its sha256 keys the cache.
        data: the dataset; proxies see its training images and validation slice only.
        cache: where scores are cached (None: no caching).
        seed: fixes the batches zero-cost proxies see and the initial weights they use.
        val_limit: score ``inherited`` on at most this many validation images.
        bn_batches, bn_batch_size: BatchNorm recalibration before ``inherited``.
    """

    space: SearchSpace
    supernet: OFASupernet | None = None
    checkpoint: Path | None = None
    data: DataSplits | None = None
    cache: ProxyCache | None = None
    device: str = "cpu"
    seed: int = 0
    channels_last: bool = True
    val_limit: int | None = None
    bn_batches: int = 8
    bn_batch_size: int = 128
    eval_batch_size: int = 256
    _memo: dict[Any, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def build(
        cls, space: str | SearchSpace, *, checkpoint: Path | str | None = None,
        data: DataSplits | str | Path | None = None, cache: ProxyCache | Path | str | bool = True,
        **kwargs: Any,
    ) -> ProxyContext:
        """A context from names and paths: loads the checkpoint and the data.

        Args:
            data: a :class:`~nas.train.DataSplits`, or a source for
                :func:`~nas.train.load_dataset` (``val_size``/``val_seed`` from the
                checkpoint's metadata when it has them).
            cache: True for the default cache file, False for none, or a path.
        """
        from nas.space import family_part
        from nas.train import DataSplits, load_dataset

        sp = get_space(space)
        net: OFASupernet | None = None
        ck = Path(checkpoint) if checkpoint is not None else None
        meta: dict[str, Any] = {}
        if ck is not None:
            # the family's own checkpoint format and supernet (a gpt space's: a GPTSupernet,
            # which the gpt proxies take; the text it is scored on is the proxy's option)
            net = family_part(sp, "load_supernet")(
                ck, space=sp, map_location=kwargs.get("device", "cpu"))
            data_meta = (getattr(net, "checkpoint_meta", None) or {}).get("data")
            meta = dict(data_meta) if isinstance(data_meta, dict) else {}
        if data is not None and not isinstance(data, DataSplits):
            same = meta.get("source") == str(data)
            data = load_dataset(
                data, val_size=int(meta.get("val_size", 5000)),
                val_seed=int(meta.get("val_seed", 0)),
                train_limit=meta.get("train_limit") if same else None,
                format=meta.get("format", "auto") if same else "auto",
                image_size=max(sp.resolutions),
            )
        store: ProxyCache | None
        if cache is True:
            store = ProxyCache(default_cache_path(ck))
        elif cache is False:
            store = None
        elif isinstance(cache, ProxyCache):
            store = cache
        else:
            store = ProxyCache(cache)
        return cls(space=sp, supernet=net, checkpoint=ck, data=data, cache=store, **kwargs)

    # ------------------------------------------------------------------ helpers for proxies
    @property
    def checkpoint_key(self) -> str:
        if "ck" not in self._memo:
            if self.checkpoint is None:
                self._memo["ck"] = "none"
            elif self.cache is not None:
                self._memo["ck"] = self.cache.sha256(self.checkpoint)
            else:
                self._memo["ck"] = checkpoint_sha256(self.checkpoint)
        return str(self._memo["ck"])

    def preprocess(self) -> Preprocess:
        from nas.train import Preprocess

        return Preprocess.for_space(self.space, channels_last=self.channels_last,
                                    device=self.device)

    def train_batches(self, r: int, n: int, batch_size: int) -> list[tuple[torch.Tensor,
                                                                          torch.Tensor]]:
        """``n`` fixed training batches at resolution ``r``, no augmentation (memoised)."""
        key = ("batches", r, n, batch_size)
        if key not in self._memo:
            from nas.train import BatchLoader

            data = self.require_data("zero-cost proxies")
            loader = BatchLoader(data.train, batch_size, shuffle=True, seed=self.seed)
            pre = self.preprocess()
            out = []
            for i, (x, y) in enumerate(loader.epoch(0)):
                if i >= n:
                    break
                out.append((pre(x, r), y.to(self.device)))
            self._memo[key] = out
        return list(self._memo[key])

    def init_supernet(self) -> OFASupernet:
        """A randomly initialised supernet of the space (seeded; shared by all archs)."""
        if "init" not in self._memo:
            import torch

            from nas.supernet import OFASupernet

            with torch.random.fork_rng():
                torch.manual_seed(self.seed)
                self._memo["init"] = OFASupernet(self.space).to(self.device)
        net: OFASupernet = self._memo["init"]
        return net

    def require_supernet(self, who: str) -> OFASupernet:
        if self.supernet is None:
            raise ConfigError(f"{who} needs a trained supernet: pass --checkpoint")
        return self.supernet

    def require_data(self, who: str) -> DataSplits:
        if self.data is None:
            raise ConfigError(f"{who} needs data: pass --data (an image folder, archive, "
                              ".npz, CIFAR-10 folder or 'digits')")
        return self.data


class _OptionsOfProxy:
    """``Proxy.Options``: the model :func:`_options_model` builds from the class's
    ``options`` and choices, read anew on each access (a cached class property: the model is
    built once per set of choices, and the ``predictor`` proxy's choices grow with the
    accuracy predictor kinds registered)."""

    def __get__(self, obj: object, owner: type[Proxy]) -> type[ConfigModel]:
        return _options_model(owner)


class Proxy(Plugin, ABC):
    """Base of accuracy proxies (plug-ins: :mod:`nas._plugin`'s contract): options are
    keyword arguments with the defaults in :attr:`options`; :meth:`score` validates, caches
    and calls :meth:`_score`.

    Subclasses set ``name``, ``description``, ``options`` (and ``choices`` of string
    options), ``tags`` and what they need, and implement ``_score(archs, ctx) -> (n,) array``
    with higher = predicted better. ``Options``, the typed model of the options, is made
    from ``options`` and the choices. Registering one is the :func:`register_proxy`
    decorator; the checks of :mod:`nas.proxies._checks` (``nas.testing``, and
    ``tests/proxies/test_proxy_contract.py`` here) then test it.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: the typed options, made from :attr:`options` and :meth:`option_choices`
    Options = _OptionsOfProxy()  # type: ignore[assignment]
    #: the option names and their defaults (the spec's ``name:key=value`` form)
    options: ClassVar[dict[str, Any]] = {}
    #: allowed values of string options
    choices: ClassVar[dict[str, tuple[str, ...]]] = {}
    needs_supernet: ClassVar[bool] = False
    needs_data: ClassVar[bool] = False
    #: cheap analytic proxies are not worth a cache entry
    cacheable: ClassVar[bool] = True
    #: scores depend on the evaluation settings of the context (``val_limit`` and the
    #: BatchNorm recalibration), which then take part in the cache key
    uses_eval_settings: ClassVar[bool] = False

    def __init__(self, **options: Any) -> None:
        self.opts: dict[str, Any] = self.check_options(options)

    @classmethod
    def option_choices(cls) -> dict[str, tuple[str, ...]]:
        """Allowed values of string options (:attr:`choices`; a proxy whose choices come
        from elsewhere, e.g. a registry, overrides this)."""
        return dict(cls.choices)

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` validated as :meth:`__init__` does (typed, defaults filled in),
        without building the proxy.

        Raises:
            ConfigError: an unknown option or a value of the wrong type.
        """
        unknown = sorted(set(options) - set(cls.options))
        if unknown:
            allowed = str(sorted(cls.options)) if cls.options else "none"
            raise ConfigError(f"proxy {cls.name!r} has no option(s) {unknown}; allowed: "
                              f"{allowed}")
        checked: dict[str, Any] = validate(cls.Options, options,
                                           f"proxy {cls.name!r}").model_dump()
        return checked

    @staticmethod
    def check_spec(spec: str) -> tuple[type[Proxy], dict[str, Any]]:
        """The class a spec names and its options, validated and typed (defaults filled in),
        read by :func:`parse_proxy_spec`; nothing is built or read from disk.

        Raises:
            UnknownNameError: listing the known proxies.
            ConfigError: a malformed spec, an unknown option or a value of the wrong type.
        """
        name, parsed = parse_proxy_spec(spec)
        cls = proxy_class(name)
        return cls, cls.check_options(parsed)

    @classmethod
    def free_text_options(cls) -> tuple[str, ...]:
        """Options whose value is free text (a string without a fixed set of choices), such
        as ``predictor``'s ``path``: whoever accepts specs from others must treat these as
        file names."""
        choices = cls.option_choices()
        return tuple(k for k, default in cls.options.items()
                     if isinstance(default, str) and k not in choices)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.opts.items())})"

    @property
    def spec(self) -> str:
        """The proxy as ``name`` or ``name:key=value,...`` (non-default options only)."""
        extra = {k: v for k, v in self.opts.items() if v != self.options[k]}
        if not extra:
            return self.name
        return f"{self.name}:" + ",".join(f"{k}={v}" for k, v in sorted(extra.items()))

    def uses_weights(self) -> bool:
        """Whether scores depend on the trained supernet (and so on the checkpoint)."""
        return self.needs_supernet or self.opts.get("weights") == "inherited"

    def key(self, ctx: ProxyContext) -> str:
        """Everything a score depends on besides the checkpoint and the architecture."""
        parts: dict[str, Any] = {"proxy": self.name, **self.opts, "seed": ctx.seed}
        if self.needs_data and ctx.data is not None:
            parts["data"] = ctx.data.key
        if self.uses_eval_settings:
            parts.update(val_limit=ctx.val_limit, bn_batches=ctx.bn_batches,
                         bn_batch_size=ctx.bn_batch_size)
        return json.dumps(parts, sort_keys=True, default=str)

    def score(self, archs: Sequence[Architecture | dict[str, Any] | str],
              ctx: ProxyContext) -> np.ndarray:
        """One score per architecture, ``(n,)`` float64, higher = predicted better.

        Raises:
            ConfigError: a supernet or data the proxy needs is missing from ``ctx``.
            NASError: a score is not finite (a bug in the proxy, or a broken checkpoint).
        """
        self._check_tags(ctx.space)
        parsed = [ctx.space.parse(a) for a in archs]
        if not parsed:
            return np.zeros(0)
        if self.uses_weights():
            ctx.require_supernet(f"proxy {self.spec!r}")
        if self.needs_data:
            ctx.require_data(f"proxy {self.spec!r}")
        if not self.cacheable or ctx.cache is None:
            values = np.asarray(self._score(parsed, ctx), dtype=np.float64)
        else:
            ck = ctx.checkpoint_key if self.uses_weights() else "none"
            key = self.key(ctx)
            hashes = [a.hash for a in parsed]
            known = ctx.cache.get(ck, key, hashes)
            todo = list(dict.fromkeys(a for a in parsed if a.hash not in known))
            if todo:
                new = np.asarray(self._score(todo, ctx), dtype=np.float64)
                self._check(new, todo)
                fresh = {a.hash: float(v) for a, v in zip(todo, new, strict=True)}
                ctx.cache.put(ck, key, fresh)
                known.update(fresh)
            values = np.asarray([known[h] for h in hashes], dtype=np.float64)
        self._check(values, parsed)
        return values

    @classmethod
    def _check_tags(cls, space: Any) -> None:
        """Refuse, in one line, a space the proxy's ``tags`` do not apply to (a proxy of the
        ``ofa`` family cannot score a ``gpt`` space, nor the reverse).

        Raises:
            ConfigError: naming the space, its family and the proxy's tags.
        """
        from nas._plugin import applies_to

        family = getattr(space, "family", "ofa")
        if applies_to(cls, family, space.name) or _names_spaces_of(cls.tags, family):
            # a proxy for some spaces of this family says which itself, as ofa-imagenet does
            return
        raise ConfigError(f"proxy {cls.name!r} applies to {sorted(cls.tags)}, not space "
                          f"{space.name!r} of the {family!r} family")

    def _check(self, values: np.ndarray, archs: Sequence[Architecture]) -> None:
        if values.shape != (len(archs),):
            raise NASError(f"proxy {self.spec!r} returned {values.shape} scores for "
                           f"{len(archs)} architectures")
        bad = [a.hash for a, v in zip(archs, values, strict=True) if not np.isfinite(v)]
        if bad:
            raise NASError(f"proxy {self.spec!r} gave a non-finite score to "
                           f"{len(bad)} architecture(s), e.g. {bad[0]}")

    @abstractmethod
    def _score(self, archs: Sequence[Architecture], ctx: ProxyContext) -> np.ndarray:
        """Scores of ``archs`` (already parsed), higher = predicted better."""

    def array_scorer(self, space: SearchSpace) -> Callable[[ArchArrays], np.ndarray] | None:
        """A function scoring whole batches of ``space``'s architectures as arrays, in this
        process, with no supernet, data or context: what a predictor or an analytic proxy
        can do, and what lets a search run at predictor speed (no Ray actors). None (the
        default) when the proxy needs a model.

        Raises:
            ConfigError: the proxy cannot score ``space`` at all.
        """
        return None


def _names_spaces_of(tags: frozenset[str], family: str) -> bool:
    """Whether ``tags`` name spaces (not families) of ``family``."""
    from nas.space import SPACES

    return any(t in SPACES and getattr(SPACES.get(t), "family", "ofa") == family for t in tags)


# ---------------------------------------------------------------------- options
_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")


def _coercer(default: Any) -> Callable[[Any], Any]:
    """A pydantic before-validator: ``default``'s type, from that type or from text (the
    ``name:key=value`` form gives every option as text)."""
    kind = type(default)
    wrong = f"must be a {kind.__name__} (default {default!r})"

    def coerce(value: Any) -> Any:
        text = isinstance(value, str)
        try:
            if kind is bool:
                if isinstance(value, bool):
                    return value
                if text and value.lower() in _TRUE + _FALSE:
                    return value.lower() in _TRUE
            elif kind is int:
                if isinstance(value, int) and not isinstance(value, bool):
                    return value
                if text:
                    return int(value)
            elif kind is float:
                if (isinstance(value, int | float) and not isinstance(value, bool)) or text:
                    return float(value)
            elif kind is str and text:
                return value
        except ValueError:
            pass
        raise ValueError(wrong)

    return coerce


def _one_of(values: tuple[str, ...]) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value not in values:
            raise ValueError(f"must be one of {list(values)}")
        return value

    return check


def _options_model(cls: type[Proxy]) -> type[ConfigModel]:
    """The pydantic model of ``cls``'s options: their types and defaults, and the choices
    (built again when the choices change, e.g. a new accuracy predictor kind)."""
    choices = cls.option_choices()
    return _build_options_model(cls, tuple(sorted(choices.items())))


@functools.cache
def _build_options_model(
    cls: type[Proxy], choice_items: tuple[tuple[str, tuple[str, ...]], ...]
) -> type[ConfigModel]:
    choices = dict(choice_items)
    fields: dict[str, Any] = {}
    for key, default in cls.options.items():
        checks: list[Any] = [BeforeValidator(_coercer(default))]
        if key in choices:
            checks.append(AfterValidator(_one_of(choices[key])))
        fields[key] = (Annotated[type(default), *checks], default)
    model: type[ConfigModel] = create_model(  # type: ignore[call-overload]
        f"{cls.__name__}Options", __base__=ConfigModel, **fields)
    return model


# ---------------------------------------------------------------------- registry
#: every proxy by name; the built-in ones register themselves when their module is imported
PROXIES: Registry[type[Proxy]] = Registry(
    "proxy", builtins=["nas.proxies._inherited", "nas.proxies._zero_cost", "nas.proxies._ofa",
                       "nas.proxies._lm"],
    checks="nas.proxies._checks:PROXY_CHECKS")


def register_proxy(cls: type[Proxy]) -> type[Proxy]:
    """Class decorator: register a proxy under ``cls.name``; a duplicate name is an error."""
    return PROXIES.register(cls)


def proxy_class(name: str) -> type[Proxy]:
    """The proxy class called ``name``.

    Raises:
        UnknownNameError: listing the known proxies.
    """
    return PROXIES.get(name)


_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_proxy_spec(spec: str) -> tuple[str, dict[str, str]]:
    """The one reading of ``name`` or ``name:key=value,key=value``: the name and the options
    as text, each key and value stripped of surrounding blanks.

    Everything that reads a proxy spec goes through here (:func:`get_proxy`,
    :meth:`Proxy.check_spec`, the service's check of paths), so ``path =FILE`` means the same
    option everywhere.

    Raises:
        ConfigError: an empty name, an item without ``=``, a key that is not an identifier,
            or a key given twice.
    """
    if not isinstance(spec, str):
        raise ConfigError(f"a proxy spec must be text, got {type(spec).__name__}")
    name, _, rest = spec.partition(":")
    name = name.strip()
    if not name:
        raise ConfigError(f"proxy spec {spec!r} has no proxy name (e.g. 'inherited' or "
                          "'predictor:kind=mlp')")
    parsed: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        k, eq, v = item.partition("=")
        k = k.strip()
        if not eq:
            raise ConfigError(f"proxy options must be key=value, got {item!r} in {spec!r}")
        if not _KEY_RE.match(k):
            raise ConfigError(f"proxy option name {k!r} in {spec!r} is not a name (letters, "
                              "digits and '_')")
        if k in parsed:
            raise ConfigError(f"proxy option {k!r} is given twice in {spec!r}")
        parsed[k] = v.strip()
    return name, parsed


def get_proxy(spec: str, **options: Any) -> Proxy:
    """A proxy from ``name`` or ``name:key=value,key=value`` (plus keyword options).

    Raises:
        UnknownNameError: listing the known proxies.
        ConfigError: a malformed spec, an unknown option or a value of the wrong type.
    """
    name, parsed = parse_proxy_spec(spec)
    return proxy_class(name)(**{**parsed, **options})


def list_proxies(pattern: str = "*") -> list[str]:
    """Names of the registered proxies matching a shell-style ``pattern``, sorted."""
    return PROXIES.names(pattern)
