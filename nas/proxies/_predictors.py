"""Learned accuracy predictors, scikit-learn estimators from architectures to accuracy.

``X`` is either a feature matrix ``(n, f)`` (e.g. an encoding with zero-cost scores as extra
columns, see :func:`accuracy_features`) or a list of architectures, which are encoded with
``encoding`` in the space ``space``. Hyper-parameters are keyword-only constructor arguments;
learned state lives in attributes ending in ``_``, so ``sklearn.base.clone``, ``get_params``
and scikit-learn's model selection work (the protocol is :mod:`nas._estimator`'s: scikit-learn
is imported only by what uses it).

``MLPAccuracyPredictor``
    Once-for-All's accuracy predictor: a 3-layer MLP (400 hidden units, ReLU) on the one-hot
    encoding, with the mean training accuracy as a fixed output offset (OFA's ``base_acc``).
``GBDTAccuracyPredictor``
    Gradient-boosted trees (scikit-learn's ``GradientBoostingRegressor``), by default on the
    compact ordinal encoding; zero-cost scores may be appended as features.

Each kind is a class registered in :data:`ACCURACY_PREDICTORS` under its ``name``; it owns
its fitting, prediction and the JSON form of its learned state (``_learned_state`` /
``_restore``). A kind is a plug-in (:mod:`nas._plugin`, :class:`~nas._plugin.KindPlugin`):
its ``name`` is also its ``kind`` (the value a saved file stores), its ``description`` one
line, its ``Options`` made from the keyword-only parameters of ``__init__``, its ``tags`` the
space families it encodes. Adding one::

    @ACCURACY_PREDICTORS.register
    class RidgeAccuracyPredictor(AccuracyPredictor):
        name = "ridge"
        description = "ridge regression on the ordinal encoding"
        tags = frozenset({"ofa"})

        def __init__(self, *, space: str | None = None, encoding: str = "ordinal",
                     alpha: float = 1.0) -> None: ...
        def _fit(self, F, y): ...
        def _predict(self, F): ...
        def _learned_state(self): ...
        def _restore(self, state): ...

and the ``predictor`` proxy, ``nas accuracy fit --model``, ``nas accuracy kinds`` and the
checks of :mod:`nas.proxies._checks` (``nas.testing.parametrize_with_checks``) pick it up.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from nas._config import ConfigModel
from nas._estimator import RegressorEstimator
from nas._io import atomic_write, read_text
from nas._plugin import KindPlugin, NoOptions
from nas._registry import Registry
from nas.errors import ConfigError, NASError, NotFittedError
from nas.space import ArchArrays, Architecture, SearchSpace, get_space

__all__ = [
    "ACCURACY_PREDICTORS",
    "AccuracyPredictor",
    "AccuracyPredictorOptions",
    "GBDTAccuracyPredictor",
    "MLPAccuracyPredictor",
    "accuracy_features",
    "accuracy_predictor_from_state",
    "accuracy_predictor_state",
    "load_accuracy_predictor",
    "make_accuracy_predictor",
    "save_accuracy_predictor",
]

#: an MLP's learned weights: per Linear layer, its weight ``(out, in)`` and bias ``(out,)``
#: (or None), float32; ReLU between the layers
MLPLayers = list[tuple[np.ndarray, np.ndarray | None]]


def mlp_forward(layers: MLPLayers, F: np.ndarray) -> np.ndarray:
    """The MLP's output ``(n,)`` on features ``F`` ``(n, in)``, in float32 as torch's
    ``nn.Sequential`` of ``nn.Linear`` and ``nn.ReLU`` computes it (to float32 rounding: the
    sums run in another order), without importing torch: a prediction does not wait for it.
    """
    x = np.asarray(F, dtype=np.float32)
    # one BLAS thread: a few hundred rows are faster alone, and OpenBLAS's threads, waking
    # for every product, cost ten times the arithmetic when another process holds a core
    with _blas_controller().limit(limits=1, user_api="blas"):
        for i, (w, b) in enumerate(layers):
            x = x @ w.T
            if b is not None:
                x += b
            if i < len(layers) - 1:
                np.maximum(x, 0, out=x)
    return x[:, 0]


@functools.lru_cache(maxsize=1)
def _blas_controller() -> Any:
    """The process's BLAS thread pools, found once (a limit is then microseconds)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def mlp_layers_of(net: Any) -> MLPLayers:
    """The weights of a torch ``nn.Sequential``'s ``nn.Linear`` layers, as numpy copies."""
    from torch import nn

    return [(m.weight.detach().float().numpy().copy(),
             None if m.bias is None else m.bias.detach().float().numpy().copy())
            for m in net if isinstance(m, nn.Linear)]


def accuracy_features(
    space: str | SearchSpace, archs: Sequence[Architecture | dict[str, Any] | str],
    kind: str = "ordinal",
    extra: Mapping[str, Any] | np.ndarray | None = None,
) -> np.ndarray:
    """The encoding of ``archs`` with optional extra columns (e.g. zero-cost scores).

    Args:
        extra: ``{name: scores}`` or an ``(n, k)`` array, appended in (sorted-name) order.
    """
    sp = get_space(space)
    X = sp.encode([sp.parse(a) for a in archs], kind=kind)
    if extra is None:
        return X
    if isinstance(extra, Mapping):
        cols = [np.asarray(extra[k], dtype=np.float32).reshape(-1, 1) for k in sorted(extra)]
        E = np.concatenate(cols, axis=1) if cols else np.zeros((len(X), 0), np.float32)
    else:
        E = np.asarray(extra, dtype=np.float32).reshape(len(X), -1)
    if len(E) != len(X):
        raise NASError(f"extra features have {len(E)} rows for {len(X)} architectures")
    return np.concatenate([X, E], axis=1)


class AccuracyPredictorOptions(ConfigModel):
    """Base of an accuracy predictor's ``Options``: its ``__init__`` parameters."""

    what: ClassVar[str] = "accuracy predictor options"


class AccuracyPredictor(RegressorEstimator, KindPlugin):
    """Base of the accuracy predictors (see the module docstring): a kind sets ``name`` (or
    ``kind``: one value), ``description`` and ``tags``; ``Options`` is made from ``__init__``,
    and :func:`make_accuracy_predictor` checks the parameters against it."""

    #: the name it is registered under (``make_accuracy_predictor(name)``)
    name: ClassVar[str] = ""
    #: the same value as ``name``: the key a saved file stores
    kind: ClassVar[str] = ""
    #: one line for listings and the CLI's help
    description: ClassVar[str] = ""
    #: the typed hyper-parameters (made from ``__init__`` unless the class sets it)
    Options: ClassVar[type[ConfigModel]] = NoOptions
    options_base = AccuracyPredictorOptions
    #: the space families it encodes
    tags: ClassVar[frozenset[str]] = frozenset()
    #: whether ``nas accuracy fit --zero-cost`` may append proxy scores to its features
    takes_extra_features: ClassVar[bool] = False
    space: str | None
    encoding: str

    def encode(self, archs: Sequence[Architecture | dict[str, Any] | str] | ArchArrays
               ) -> np.ndarray:
        """Architectures of the predictor's ``space`` (or their arrays) as its features: the
        space's ``encoding`` by default; a kind with an encoding of its own overrides this and
        :meth:`encoding_size`."""
        if self.space is None:
            raise ConfigError(f"{type(self).__name__}(space=None) takes a feature matrix; "
                              "set space= to pass architectures")
        sp = get_space(self.space)
        arrs = archs if isinstance(archs, ArchArrays) else [sp.parse(a) for a in archs]
        return sp.encode(arrs, kind=self.encoding)

    def encoding_size(self) -> int:
        """The number of columns :meth:`encode` gives in the predictor's ``space``."""
        if self.space is None:
            raise ConfigError(f"{type(self).__name__}(space=None) has no encoding; set space=")
        return get_space(self.space).encoding_size(self.encoding)

    def _features(self, X: Any) -> np.ndarray:
        if isinstance(X, np.ndarray) and X.dtype.kind in "fiub":
            F = X.astype(np.float32)
        elif isinstance(X, ArchArrays) or (isinstance(X, Sequence) and not isinstance(X, str)
                                           and len(X) and not _is_number_row(X[0])):
            F = self.encode(X)
        else:
            F = np.asarray(X, dtype=np.float32)
        if F.ndim != 2:
            raise NASError(f"X must be 2-D (n_samples, n_features), got shape {F.shape}")
        if not np.all(np.isfinite(F)):
            raise NASError("X holds NaN or infinite values")
        return F

    def fit(self, X: Any, y: Any) -> AccuracyPredictor:
        """Fit on features or architectures ``X`` and accuracies ``y``; returns self."""
        F = self._features(X)
        yv = np.asarray(y, dtype=np.float64).ravel()
        if len(yv) != len(F):
            raise NASError(f"X has {len(F)} rows but y has {len(yv)} values")
        if len(yv) < 2:
            raise NASError(f"an accuracy predictor needs at least 2 samples, got {len(yv)}")
        if not np.all(np.isfinite(yv)):
            raise NASError("y holds NaN or infinite accuracies")
        self._fit(F, yv)
        self.n_features_in_ = F.shape[1]
        self.n_train_ = len(yv)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predicted accuracy, ``(n,)``.

        Raises:
            NotFittedError: before :meth:`fit`.
        """
        if not hasattr(self, "n_train_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call "
                                 "fit(X, y) first")
        F = self._features(X) if len(X) else np.zeros((0, self.n_features_in_), np.float32)
        if F.shape[1] != self.n_features_in_:
            raise NASError(f"X has {F.shape[1]} features but the predictor was fitted on "
                           f"{self.n_features_in_}")
        if not len(F):  # scikit-learn's own estimators refuse zero rows
            return np.zeros(0)
        return np.asarray(self._predict(F), dtype=np.float64).ravel()

    def _fit(self, F: np.ndarray, y: np.ndarray) -> None:
        raise NotImplementedError

    def _predict(self, F: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _learned_state(self) -> dict[str, Any]:
        """The learned attributes as JSON-serialisable data (a fitted predictor)."""
        raise NotImplementedError

    def _restore(self, state: Mapping[str, Any]) -> None:
        """Set the learned attributes from :meth:`_learned_state`'s data."""
        raise NotImplementedError


#: every accuracy predictor by ``name`` (also its ``kind``)
ACCURACY_PREDICTORS: Registry[type[AccuracyPredictor]] = Registry(
    "accuracy predictor", key="name", builtins=["nas.proxies._ofa"],
    checks="nas.proxies._checks:ACCURACY_PREDICTOR_CHECKS")


def _is_number_row(row: Any) -> bool:
    return isinstance(row, list | tuple | np.ndarray) and all(
        isinstance(v, int | float | np.number) for v in row
    )


@ACCURACY_PREDICTORS.register
class MLPAccuracyPredictor(AccuracyPredictor):
    """Once-for-All's MLP accuracy predictor (3 hidden layers of 400 ReLU units).

    Trained with Adam (in torch) on the mean squared error of standardised accuracies; the
    mean training accuracy is the output offset (OFA's ``base_acc``). The learned weights are
    kept as numpy arrays (``layers_``) and predictions run in numpy (:func:`mlp_forward`), so
    loading and using a predictor imports no torch.

    Args:
        space: search space name, needed when ``X`` holds architectures.
        encoding: ``"onehot"`` (OFA's) or ``"ordinal"``.
        hidden_size, n_layers: the MLP's width and number of hidden layers.
        epochs, lr, weight_decay, batch_size: Adam training.
        random_state: seed of the initial weights and of the batch order.
    """

    name = "mlp"
    description = ("Once-for-All's accuracy predictor: an MLP (3 hidden layers of 400 ReLU "
                   "units) on the one-hot encoding")
    tags = frozenset({"ofa"})

    def __init__(
        self, *, space: str | None = None, encoding: str = "onehot", hidden_size: int = 400,
        n_layers: int = 3, epochs: int = 500, lr: float = 1e-3, weight_decay: float = 1e-4,
        batch_size: int = 256, random_state: int = 0,
    ) -> None:
        self.space = space
        self.encoding = encoding
        self.hidden_size = hidden_size
        self.n_layers = n_layers
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.random_state = random_state

    def _fit(self, F: np.ndarray, y: np.ndarray) -> None:
        import torch  # training only: a prediction runs in numpy (mlp_forward)
        from torch import nn

        gen = torch.Generator().manual_seed(self.random_state)
        with torch.random.fork_rng():
            torch.manual_seed(self.random_state)
            layers: list[nn.Module] = []
            width = F.shape[1]
            for _ in range(self.n_layers):
                layers += [nn.Linear(width, self.hidden_size), nn.ReLU()]
                width = self.hidden_size
            layers.append(nn.Linear(width, 1, bias=False))
            net = nn.Sequential(*layers)
        self.base_acc_ = float(y.mean())
        self.y_scale_ = float(y.std()) or 1.0
        X = torch.from_numpy(F)
        t = torch.from_numpy((y - self.base_acc_) / self.y_scale_).float()
        opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        n = len(X)
        for _ in range(self.epochs):
            perm = torch.randperm(n, generator=gen)
            for i in range(0, n, self.batch_size):
                idx = perm[i : i + self.batch_size]
                opt.zero_grad()
                loss = ((net(X[idx]).squeeze(1) - t[idx]) ** 2).mean()
                loss.backward()
                opt.step()
        self.layers_ = mlp_layers_of(net)

    def _predict(self, F: np.ndarray) -> np.ndarray:
        out = mlp_forward(self.layers_, F).astype(np.float64)
        return out * self.y_scale_ + self.base_acc_  # type: ignore[no-any-return]

    def _learned_state(self) -> dict[str, Any]:
        return {"base_acc": self.base_acc_, "y_scale": self.y_scale_, "layers": [
            {"weight": w.tolist(), "bias": None if b is None else b.tolist()}
            for w, b in self.layers_]}

    def _restore(self, state: Mapping[str, Any]) -> None:
        self.layers_ = [(np.asarray(layer["weight"], dtype=np.float32),
                         None if layer["bias"] is None
                         else np.asarray(layer["bias"], dtype=np.float32))
                        for layer in state["layers"]]
        self.base_acc_ = float(state["base_acc"])
        self.y_scale_ = float(state["y_scale"])


@ACCURACY_PREDICTORS.register
class GBDTAccuracyPredictor(AccuracyPredictor):
    """Gradient-boosted regression trees on an encoding (plus any extra feature columns).

    Args:
        space: search space name, needed when ``X`` holds architectures.
        encoding: ``"ordinal"`` (compact, suits trees) or ``"onehot"``.
        n_estimators, learning_rate, max_depth, subsample, min_samples_leaf: those of
            ``sklearn.ensemble.GradientBoostingRegressor``.
    """

    name = "gbdt"
    description = ("gradient-boosted trees on the ordinal encoding (zero-cost scores may be "
                   "added as features)")
    tags = frozenset({"ofa"})
    takes_extra_features = True

    def __init__(
        self, *, space: str | None = None, encoding: str = "ordinal", n_estimators: int = 300,
        learning_rate: float = 0.05, max_depth: int = 3, subsample: float = 0.8,
        min_samples_leaf: int = 2, random_state: int = 0,
    ) -> None:
        self.space = space
        self.encoding = encoding
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.subsample = subsample
        self.min_samples_leaf = min_samples_leaf
        self.random_state = random_state

    def _fit(self, F: np.ndarray, y: np.ndarray) -> None:
        from sklearn.ensemble import GradientBoostingRegressor

        self.model_ = GradientBoostingRegressor(
            n_estimators=self.n_estimators, learning_rate=self.learning_rate,
            max_depth=self.max_depth, subsample=self.subsample,
            min_samples_leaf=self.min_samples_leaf, random_state=self.random_state,
        ).fit(F, y)

    def _predict(self, F: np.ndarray) -> np.ndarray:
        return self.model_.predict(F)  # type: ignore[no-any-return]

    def _learned_state(self) -> dict[str, Any]:
        model = self.model_
        trees = model if isinstance(model, _Trees) else _Trees.from_sklearn(model)
        return {"trees": trees.to_state()}

    def _restore(self, state: Mapping[str, Any]) -> None:
        t = state["trees"]
        self.model_ = _Trees(t["init"], t["learning_rate"], t["trees"])


def make_accuracy_predictor(kind: str, **params: Any) -> AccuracyPredictor:
    """The accuracy predictor registered as ``kind`` with keyword hyper-parameters, once they
    pass its ``Options`` (the values are kept as given, as scikit-learn's ``clone`` expects).

    Raises:
        UnknownNameError: listing the known kinds.
        ConfigError: an unknown parameter or a bad value, in one line naming it.
    """
    cls = ACCURACY_PREDICTORS.get(kind)
    cls.Options.from_dict(params, where=f"accuracy predictor {cls.name!r}")
    return cls(**params)


# ---------------------------------------------------------------------- storage (JSON, no pickle)
STATE_FORMAT = "nas.accuracy_predictor/1"


class _Trees:
    """A fitted ``GradientBoostingRegressor`` (squared error) as plain arrays: the initial
    constant plus the learning rate times the sum of the trees' leaf values."""

    def __init__(self, init: float, learning_rate: float, trees: list[dict[str, Any]]) -> None:
        self.init = float(init)
        self.learning_rate = float(learning_rate)
        self.trees = [{k: np.asarray(v) for k, v in t.items()} for t in trees]

    @classmethod
    def from_sklearn(cls, model: Any) -> _Trees:
        trees = []
        for est in model.estimators_[:, 0]:
            t = est.tree_
            trees.append({"left": t.children_left.tolist(), "right": t.children_right.tolist(),
                          "feature": t.feature.tolist(), "threshold": t.threshold.tolist(),
                          "value": t.value[:, 0, 0].tolist()})
        return cls(float(np.ravel(model.init_.constant_)[0]), model.learning_rate, trees)

    def to_state(self) -> dict[str, Any]:
        return {"init": self.init, "learning_rate": self.learning_rate,
                "trees": [{k: v.tolist() for k, v in t.items()} for t in self.trees]}

    def predict(self, F: np.ndarray) -> np.ndarray:
        out = np.full(len(F), self.init)
        rows = np.arange(len(F))
        for t in self.trees:
            node = np.zeros(len(F), dtype=np.int64)
            while True:
                inner = t["left"][node] >= 0
                if not inner.any():
                    break
                n = node[inner]
                go_left = F[rows[inner], t["feature"][n]] <= t["threshold"][n]
                node[inner] = np.where(go_left, t["left"][n], t["right"][n])
            out += self.learning_rate * t["value"][node]
        return out


def accuracy_predictor_state(est: AccuracyPredictor, **info: Any) -> dict[str, Any]:
    """A fitted predictor as JSON-serialisable data (hyper-parameters and learned weights);
    ``info`` (e.g. what it was fitted on, its held-out metrics) is stored alongside."""
    if not hasattr(est, "n_train_"):
        raise NotFittedError(f"this {type(est).__name__} is not fitted yet")
    state: dict[str, Any] = {"format": STATE_FORMAT, "kind": est.kind,
                             "params": est.get_params(), "n_features": est.n_features_in_,
                             "n_train": est.n_train_, "info": info}
    state.update(est._learned_state())
    return state


def accuracy_predictor_from_state(state: Mapping[str, Any]) -> AccuracyPredictor:
    """Rebuild a predictor saved with :func:`accuracy_predictor_state`."""
    if state.get("format") != STATE_FORMAT:
        raise NASError(f"not a saved accuracy predictor (format {state.get('format')!r}, "
                       f"expected {STATE_FORMAT!r})")
    est = make_accuracy_predictor(str(state["kind"]), **dict(state["params"]))
    est._restore(state)
    est.n_features_in_ = int(state["n_features"])
    est.n_train_ = int(state["n_train"])
    return est


def save_accuracy_predictor(est: AccuracyPredictor, path: Any, **info: Any) -> Path:
    """Write the predictor as JSON to ``path`` (atomically); returns the path."""
    return atomic_write(path, json.dumps(accuracy_predictor_state(est, **info)))


def load_accuracy_predictor(path: Any) -> AccuracyPredictor:
    """Read a predictor written by :func:`save_accuracy_predictor` (JSON; never pickle)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"accuracy predictor file {path} does not exist; write one with "
                          "`nas accuracy fit ... --out FILE`")
    text = read_text(path, "accuracy predictor", error=NASError)
    try:
        state = json.loads(text)
    except ValueError as exc:
        raise NASError(f"cannot read accuracy predictor {path}: {exc}") from None
    return accuracy_predictor_from_state(state)
