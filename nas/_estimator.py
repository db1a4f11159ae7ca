"""scikit-learn's estimator protocol without importing scikit-learn.

The latency and accuracy predictors are scikit-learn estimators by protocol: keyword-only
hyper-parameters stored as they are given, ``get_params`` / ``set_params``, ``clone``,
``score`` and the estimator tags, so that ``sklearn.base.clone`` and scikit-learn's model
selection (``cross_val_score``, ``GridSearchCV``) take them. Inheriting
``sklearn.base.BaseEstimator`` for that would make every command that loads a predictor
(``nas latency predict``, ``nas search`` on the predictor engine) import scikit-learn, SciPy
and pandas first, a second or more of its start-up for nothing. :class:`RegressorEstimator`
implements the same methods as ``BaseEstimator`` and ``RegressorMixin``, written here to
behave as scikit-learn 1.9's do (``tests/core/test_estimator.py`` compares them);
scikit-learn itself is imported only by the methods that hand something to it (``score``,
``__sklearn_tags__``), which only run when scikit-learn is in use.
"""

from __future__ import annotations

import inspect
import math
from collections import defaultdict
from typing import Any, Self

__all__ = ["RegressorEstimator"]

#: longer reprs are cut in the middle, as scikit-learn's are (its ``N_CHAR_MAX``)
_REPR_MAX = 700


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


class RegressorEstimator:
    """``sklearn.base.RegressorMixin`` and ``BaseEstimator``, as a protocol: a subclass takes
    its hyper-parameters keyword-only in ``__init__`` and stores each, unchanged, in the
    attribute of its name; learned state lives in attributes ending in ``_``."""

    @classmethod
    def _get_param_names(cls) -> list[str]:
        """The hyper-parameters: the parameters of ``__init__``, sorted."""
        init = cls.__init__
        if init is object.__init__:
            return []
        params = [p for p in inspect.signature(init).parameters.values()
                  if p.name != "self" and p.kind != p.VAR_KEYWORD]
        for p in params:
            if p.kind == p.VAR_POSITIONAL:
                raise RuntimeError(
                    f"{cls.__name__}.__init__{inspect.signature(init)} takes *{p.name}: an "
                    "estimator names each hyper-parameter as a keyword of __init__")
        return sorted(p.name for p in params)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The hyper-parameters by name; with ``deep``, also those of parameters that are
        estimators themselves, as ``name__param``."""
        out: dict[str, Any] = {}
        for key in self._get_param_names():
            value = getattr(self, key)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update((f"{key}__{k}", v) for k, v in value.get_params().items())
            out[key] = value
        return out

    def set_params(self, **params: Any) -> Self:
        """Set hyper-parameters (``name__param`` for those of a nested estimator); returns
        self.

        Raises:
            ValueError: a name that is not a hyper-parameter.
        """
        if not params:
            return self
        valid = self.get_params(deep=True)
        nested: dict[str, dict[str, Any]] = defaultdict(dict)
        for full_key, value in params.items():
            key, delim, sub_key = full_key.partition("__")
            if key not in valid:
                raise ValueError(f"Invalid parameter {key!r} for estimator {self}. Valid "
                                 f"parameters are: {self._get_param_names()!r}.")
            if delim:
                nested[key][sub_key] = value
            else:
                setattr(self, key, value)
                valid[key] = value
        for key, sub_params in nested.items():
            valid[key].set_params(**sub_params)
        return self

    def __repr__(self) -> str:
        # scikit-learn's default: the class and the parameters that differ from the defaults
        defaults = {n: p.default for n, p in inspect.signature(type(self).__init__)
                    .parameters.items()}
        shown = []
        for key, value in self.get_params(deep=False).items():
            default = defaults.get(key, inspect.Parameter.empty)
            if (default is not inspect.Parameter.empty and repr(value) == repr(default)) or (
                    _is_nan(value) and _is_nan(default)):
                continue
            shown.append(f"{key}={value!r}")
        text = f"{type(self).__name__}({', '.join(shown)})"
        if len(text) > _REPR_MAX:
            half = _REPR_MAX // 2
            text = text[:half] + "..." + text[-half:]
        return text

    def __sklearn_tags__(self) -> Any:
        """A regressor's tags (``sklearn.utils.get_tags`` asks for them; only scikit-learn
        calls this, so importing it here costs nothing more)."""
        from sklearn.utils import RegressorTags, Tags, TargetTags

        return Tags(estimator_type="regressor", target_tags=TargetTags(required=True),
                    transformer_tags=None, regressor_tags=RegressorTags(),
                    classifier_tags=None)

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """The coefficient of determination R² of ``predict(X)`` against ``y``
        (``RegressorMixin.score``)."""
        from sklearn.metrics import r2_score

        return float(r2_score(y, self.predict(X), sample_weight=sample_weight))  # type: ignore[attr-defined]
