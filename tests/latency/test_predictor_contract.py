"""What every registered latency predictor kind must do, run against each of them.

Parametrized from the registry by :func:`nas.testing.parametrize_with_checks`, as a plug-in
package would: the shared plug-in contract (name, description, Options, tags) and the
latency kinds' own checks (:mod:`nas.latency._checks`). A new kind (one class with
``@PREDICTORS.register``) is tested by adding it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from nas.errors import ConfigError, UnknownNameError
from nas.latency import PREDICTORS, FlopsPredictor, make_predictor
from nas.space import ArchArrays
from nas.testing import check_plugin, parametrize_with_checks, plugin_checks


def test_the_built_in_kinds_are_registered() -> None:
    assert {"flops", "lut", "additive", "gbdt", "hybrid", "table", "transfer"} <= \
        set(PREDICTORS.names())
    with pytest.raises(UnknownNameError, match="known kinds: " + ", ".join(PREDICTORS)):
        make_predictor("no-such-kind", "tiny")


@parametrize_with_checks(PREDICTORS)
def test_predictor_contract(plugin: Any, check: Any) -> None:
    check(plugin)


def test_name_and_kind_are_one_value() -> None:
    for name, cls in PREDICTORS.items():
        assert cls.name == cls.kind == name
    with pytest.raises(TypeError, match="must be one value"):
        class Twice(FlopsPredictor):
            name = "one"
            kind = "other"


def test_bad_options_are_one_line_naming_the_option() -> None:
    with pytest.raises(ConfigError, match=r"^latency predictor 'flops': weighting = 'abs': "):
        make_predictor("flops", "tiny", weighting="abs")
    with pytest.raises(ConfigError, match="no_such: unknown field"):
        make_predictor("additive", "tiny", no_such=1)
    with pytest.raises(ConfigError, match="weighting = 'x': "):  # checked again at fit
        FlopsPredictor(space="tiny", weighting="x").fit([], [])  # type: ignore[arg-type]


def test_a_new_kind_is_checked_by_registering_it() -> None:
    @PREDICTORS.register
    class Scaled(FlopsPredictor):
        kind = "test-scaled-flops"
        description = "flops, registered by a test"

    try:
        names = [c.__name__ for c in plugin_checks(PREDICTORS, Scaled)]
        assert "check_fits_an_additive_latency" in names
        assert "check_state_round_trip" in names
        check_plugin(PREDICTORS, "test-scaled-flops")
    finally:
        PREDICTORS.unregister("test-scaled-flops")
    assert "test-scaled-flops" not in PREDICTORS


def test_a_broken_kind_fails_the_checks() -> None:
    @PREDICTORS.register
    class Broken(FlopsPredictor):
        name = "test-broken"
        description = "predicts NaN\nin two lines"

        def _predict(self, a: ArchArrays) -> np.ndarray:
            return np.full(len(a), np.nan)

    try:
        with pytest.raises(AssertionError) as info:
            check_plugin(PREDICTORS, "test-broken")
    finally:
        PREDICTORS.unregister("test-broken")
    text = str(info.value)
    assert "check_description: " in text
    assert "one line" in text
    assert "check_predict_shape_finite_positive: " in text
    assert "not finite" in text
