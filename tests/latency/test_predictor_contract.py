"""What every registered latency predictor kind must do, run against each of them.

Parametrized from the registry: a new kind (one class with ``@PREDICTORS.register``) is
tested by adding it. The checks are in :mod:`nas.latency._checks`.
"""

from __future__ import annotations

import numpy as np
import pytest

from nas.errors import UnknownNameError
from nas.latency import PREDICTORS, FlopsPredictor, make_predictor
from nas.latency._checks import predictor_checks
from nas.space import ArchArrays

CASES = [(kind, name) for kind in PREDICTORS.names() for name, _ in predictor_checks(kind)]


def test_the_built_in_kinds_are_registered() -> None:
    assert {"flops", "lut", "additive", "gbdt", "hybrid"} <= set(PREDICTORS.names())
    with pytest.raises(UnknownNameError, match="known kinds: " + ", ".join(PREDICTORS)):
        make_predictor("no-such-kind", "tiny")


@pytest.mark.parametrize(("kind", "check"), CASES, ids=[f"{k}-{c}" for k, c in CASES])
def test_predictor_contract(kind: str, check: str) -> None:
    dict(predictor_checks(kind))[check]()


def test_a_new_kind_is_checked_by_registering_it() -> None:
    @PREDICTORS.register
    class Scaled(FlopsPredictor):
        kind = "test-scaled-flops"
        summary = "flops, registered by a test"

    try:
        names = [name for name, _ in predictor_checks("test-scaled-flops")]
        assert "fits_an_additive_latency" in names and "state_round_trip" in names
        for _, check in predictor_checks("test-scaled-flops"):
            check()
    finally:
        PREDICTORS.unregister("test-scaled-flops")
    assert "test-scaled-flops" not in PREDICTORS


def test_a_broken_kind_fails_the_checks() -> None:
    @PREDICTORS.register
    class Broken(FlopsPredictor):
        kind = "test-broken"
        summary = "predicts NaN"

        def _predict(self, a: ArchArrays) -> np.ndarray:
            return np.full(len(a), np.nan)

    try:
        checks = dict(predictor_checks("test-broken"))
        with pytest.raises(AssertionError, match="not finite"):
            checks["predict_shape_finite_positive"]()
    finally:
        PREDICTORS.unregister("test-broken")
