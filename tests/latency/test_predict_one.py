"""One architecture's prediction is the batch's (issue 27, "a prediction in microseconds"): the
fast paths of a single call (the ``gpt`` features from integer tables, each architecture
parsed once, a large per-layer table not copied) give the very floats of a batch, and the
``gpt`` features are those of the formulas of :mod:`nas.latency._gpt_features`."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from nas.devices import get_device
from nas.errors import ArchitectureError
from nas.latency import make_predictor
from nas.latency._gpt_features import gpt_features
from nas.space import GPTArrays, get_space

WORKLOADS = ("cpu-1t-decode256", "cpu-1t-prefill128", "cpu-1t-decode256-int8")


def _formulas(sp: Any, tokens: int, positions: int, a: GPTArrays) -> np.ndarray:
    """The features as the module docstring writes them, in float64 over the batch (the
    implementation before the integer tables)."""
    d = a.n_embd.astype(np.float64)
    att = a.n_head.astype(np.float64) * sp.head_dim
    m = a.mlp.astype(np.float64)
    t, s, vocab = float(tokens), float(positions), float(sp.vocab_size)
    dd = d[:, None]
    linear = t * (3 * dd * att + att * dd + 2 * dd * m).sum(1) + t * d * vocab
    attention = 2 * t * s * att.sum(1)
    params = sp.costs(a)["params"].astype(np.float64)
    cache = 2 * (s + (s - t)) * att.sum(1)
    blocks = a.n_layer.astype(np.float64)
    acts = t * (np.where(att > 0, 4 * dd + 5 * att + 2 * m, 0.0).sum(1) + d + vocab)
    return np.stack([linear / 1e6, attention / 1e6, 4 * params / 1e6, 4 * cache / 1e6,
                     blocks, acts / 1e6, np.ones_like(d)], axis=1)


@pytest.mark.parametrize("space", ["gpt_shakespeare", "gpt2"])
@pytest.mark.parametrize("device", WORKLOADS)
def test_gpt_features_are_the_formulas_to_the_last_bit(space: str, device: str) -> None:
    sp: Any = get_space(space)
    f = gpt_features(sp, get_device(device).workload.model_dump(exclude_none=True))
    archs = [*sp.sample_many(500, seed=3), sp.smallest(), sp.largest()]
    a = sp.to_arrays(archs)
    want = _formulas(sp, f.tokens, f.positions, a)
    np.testing.assert_array_equal(f.transform(a), want)
    np.testing.assert_array_equal(f.transform(archs), want)
    np.testing.assert_array_equal(
        np.concatenate([f.transform([x]) for x in archs[:40]]), want[:40])
    np.testing.assert_array_equal(f.macs(a), want[:, 0] + want[:, 1])
    assert f.transform(sp.to_arrays([])).shape == (0, 7)


def test_gpt_arrays_with_a_value_the_space_does_not_offer_are_refused() -> None:
    sp: Any = get_space("gpt_shakespeare")
    f = gpt_features(sp, get_device("cpu-1t-decode256").workload.model_dump(
        exclude_none=True))
    good = sp.to_arrays([sp.largest()])
    for field, value in (("n_embd", 100), ("n_embd", 10_000), ("n_head", 4), ("mlp", 300),
                         ("mlp", 10**6)):
        arrays = {k: getattr(good, k).copy() for k in ("n_layer", "n_embd", "n_head", "mlp")}
        if arrays[field].ndim == 2:
            arrays[field][0, 0] = value
        else:
            arrays[field][0] = value
        with pytest.raises(ArchitectureError, match="does not offer"):
            f.transform(GPTArrays(**arrays))


def _fitted(kind: str, space: str) -> Any:
    sp: Any = get_space(space)
    archs = sp.sample_many(120, seed=0)
    y = np.asarray(sp.costs(archs)["macs"], dtype=float)
    y = (y / y.mean() + 0.2) * np.random.default_rng(0).normal(1.0, 0.03, len(y))
    device = "cpu-1t-decode256" if space.startswith("gpt") else None
    return make_predictor(kind, space, device=device).fit(archs, y)


@pytest.mark.parametrize(("kind", "space"), [
    ("flops", "gpt_shakespeare"), ("additive", "gpt_shakespeare"),
    ("transfer", "gpt_shakespeare"), ("gbdt", "gpt_shakespeare"),
    ("flops", "ofa_mbv3"), ("additive", "ofa_mbv3"), ("gbdt", "ofa_mbv3"),
])
def test_one_architecture_at_a_time_predicts_what_the_batch_does(kind: str,
                                                                   space: str) -> None:
    est = _fitted(kind, space)
    sp: Any = get_space(space)
    archs = sp.sample_many(150, seed=5)
    batch = est.predict(archs)
    ones = np.concatenate([est.predict([a]) for a in archs])
    if kind == "additive" and space.startswith("gpt"):
        # its features are the batch's to the bit (above); the dot product with the
        # coefficients is BLAS's, whose order of summation depends on the batch's size
        np.testing.assert_allclose(ones, batch, rtol=1e-14, atol=0)
    else:
        np.testing.assert_array_equal(ones, batch)
    np.testing.assert_array_equal(est.predict(sp.to_arrays(archs)), batch)
    np.testing.assert_array_equal(est.predict([a.to_dict() for a in archs[:10]]),
                                  est.predict(archs[:10]))
    np.testing.assert_array_equal(est.predict(archs[0]), est.predict(archs[:1]))
