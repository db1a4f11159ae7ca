"""What every registered accuracy predictor must do, run against each of them.

Parametrized from the registry by :func:`nas.testing.parametrize_with_checks`, as a plug-in
package would: the shared plug-in contract (name, description, Options, tags) and the
accuracy predictors' own checks (:mod:`nas.proxies._checks`). A new kind (one class with
``@ACCURACY_PREDICTORS.register``) is tested by adding it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nas.errors import ConfigError, NotFittedError, UnknownNameError
from nas.proxies import (
    ACCURACY_PREDICTORS,
    GBDTAccuracyPredictor,
    MLPAccuracyPredictor,
    load_accuracy_predictor,
    make_accuracy_predictor,
    save_accuracy_predictor,
)
from nas.space import get_space
from nas.testing import check_plugin, parametrize_with_checks

KINDS = ACCURACY_PREDICTORS.names()


def test_there_are_kinds_to_test() -> None:
    assert {"mlp", "gbdt", "ofa"} <= set(KINDS)
    with pytest.raises(UnknownNameError, match="known: " + ", ".join(KINDS)):
        make_accuracy_predictor("no-such-kind")


@parametrize_with_checks(ACCURACY_PREDICTORS)
def test_accuracy_predictor_contract(plugin: Any, check: Any) -> None:
    check(plugin)


def test_name_and_kind_are_one_value() -> None:
    for name, cls in ACCURACY_PREDICTORS.items():
        assert cls.name == cls.kind == name
    with pytest.raises(TypeError, match="must be one value"):
        class Twice(MLPAccuracyPredictor):
            name = "one"
            kind = "other"


def test_bad_parameters_are_one_line_naming_them() -> None:
    with pytest.raises(ConfigError, match=r"^accuracy predictor 'mlp': epochs = 'x': "):
        make_accuracy_predictor("mlp", epochs="x")
    with pytest.raises(ConfigError, match=r"^accuracy predictor 'gbdt': alpha: unknown field"):
        make_accuracy_predictor("gbdt", alpha=1.0)


def test_a_saved_file_round_trips_and_an_unfitted_one_is_refused(tmp_path: Path) -> None:
    sp = get_space("tiny")
    archs = sp.sample_many(20, seed=0)
    y = np.linspace(0.5, 0.7, len(archs))
    est = make_accuracy_predictor("gbdt", space="tiny", n_estimators=10).fit(archs, y)
    path = save_accuracy_predictor(est, tmp_path / "gbdt.json", note="contract")
    back = load_accuracy_predictor(path)
    np.testing.assert_allclose(back.predict(archs), est.predict(archs))
    with pytest.raises(NotFittedError):
        save_accuracy_predictor(make_accuracy_predictor("mlp"), tmp_path / "unfitted.json")


def test_a_broken_kind_fails_the_checks_by_name() -> None:
    @ACCURACY_PREDICTORS.register
    class Broken(GBDTAccuracyPredictor):
        name = "test-broken"
        description = "trees\nin two lines"

        def _predict(self, F: np.ndarray) -> np.ndarray:
            return np.full(len(F), np.nan)

    try:
        with pytest.raises(AssertionError) as info:
            check_plugin(ACCURACY_PREDICTORS, "test-broken")
    finally:
        ACCURACY_PREDICTORS.unregister("test-broken")
    failed = {line.split(":")[0] for line in str(info.value).splitlines()[1:]}
    assert {"check_description", "check_accuracy_fit_and_predict"} <= failed, str(info.value)
    assert "check_accuracy_options_are_the_init_parameters" not in failed
