"""The ``structure`` kind and ``transfer``'s structure candidate: few-shot where latency
follows operator count rather than MACs (batch-1 GPUs, small inputs).

Synthetic devices of ``ofa_mbv3``: an overhead-bound one prices a subnet by its operators
(a per-operator cost per operator type drawn once, so operators of a block do not all cost
the same) plus a little arithmetic; compute-bound ones by the MACs of each layer with
per-entry variation. Only the operator count of exported graphs is checked against ONNX.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from nas.errors import ConfigError, NASError
from nas.latency import make_predictor
from nas.latency._features import layer_features
from nas.latency._predictors import predictor_from_state
from nas.latency._structure import structure_features
from nas.latency._transfer import prior_entry
from nas.measure import regression_metrics
from nas.space import get_space

SPACE = "ofa_mbv3"
N_POOL = 100


def test_operators_are_the_exported_graph_s_operators() -> None:
    import onnx

    from nas.measure._measure import _default_supernet, _family_export

    sp = get_space(SPACE)
    archs = [sp.smallest(160), sp.largest(224), *sp.sample_many(3, seed=4)]
    ops = structure_features(SPACE).transform(sp.to_arrays(archs))[:, 0]
    net, export = _default_supernet(sp), _family_export(sp)
    for a, n in zip(archs, ops, strict=True):
        graph = onnx.load_from_string(export(net, a)).graph
        assert n == sum(node.op_type != "Identity" for node in graph.node), a.to_dict()


def test_mmacs_are_the_space_s_macs() -> None:
    sp = get_space(SPACE)
    archs = sp.sample_many(20, seed=1)
    x = structure_features(SPACE).transform(sp.to_arrays(archs))
    costs = sp.costs(archs)
    np.testing.assert_allclose(x[:, 1], costs["macs"] / 1e6, rtol=1e-9)
    # float32 weights of the convolutions (batch-norm and bias parameters aside: under 1%)
    np.testing.assert_allclose(x[:, 3], 4 * costs["params"] / 1e6, rtol=0.01)
    assert (x[:, 2] > 0).all()
    assert (x[:, 4] == [a.r for a in archs]).all()
    # a device that feeds every subnet 32x32 inputs: MACs and activations at that side
    small = structure_features(SPACE).transform(sp.to_arrays(archs), input_resolution=32)
    r = np.asarray([a.r for a in archs], dtype=float)
    np.testing.assert_allclose(small[:, 1], x[:, 1] * (32 / r) ** 2)
    np.testing.assert_allclose(small[:, [0, 3]], x[:, [0, 3]])
    assert (small[:, 4] == 32).all()


@pytest.fixture(scope="module")
def world() -> dict[str, Any]:
    """500 subnets; two compute-bound devices (per-layer MACs with per-entry variation) and
    an overhead-bound target (operators priced by slot, a little arithmetic, 1% noise)."""
    sp = get_space(SPACE)
    lf = layer_features(SPACE)
    archs = sp.sample_many(500, seed=0)
    a = sp.to_arrays(archs)
    rng = np.random.default_rng(0)
    ys = {}
    for j, name in enumerate(("compute-a", "compute-b")):
        table = lf.macs_layer * np.exp(rng.normal(0, 0.2, lf.macs_layer.shape))
        y = lf.gather_sum(table, lf.macs_fixed, a)
        ys[name] = y * (j + 1) * rng.normal(1, 0.01, len(y))
    sf = structure_features(SPACE)
    per_op = np.exp(rng.normal(0, 0.1, sf.table.shape[:4]))  # type: ignore[union-attr]
    op_table = sf.table[..., 0] * per_op * 0.01  # type: ignore[index]
    launch = lf.gather_sum(op_table, np.full(len(lf.resolutions), 0.13), a)
    y = launch + 1e-5 * lf.macs(a)
    ys["overhead"] = y * rng.normal(1, 0.01, len(y))
    priors = [prior_entry(d, make_predictor("additive", SPACE).fit(archs, ys[d]))
              for d in ("compute-a", "compute-b")]
    return {"archs": archs, "y": ys, "priors": priors}


def _score(world: dict[str, Any], target: str, k: int, draws: int = 4,
           **kinds: dict[str, Any]) -> dict[str, float]:
    archs, y = world["archs"], world["y"][target]
    test = np.arange(N_POOL, len(archs))
    out: dict[str, list[float]] = {}
    for rep in range(draws):
        tr = np.random.default_rng(rep).choice(N_POOL, k, replace=False)
        for name, params in kinds.items():
            p = dict(params)
            est = make_predictor(p.pop("kind", name), SPACE, **p)
            est.fit([archs[i] for i in tr], y[tr])
            m = regression_metrics(y[test], est.predict([archs[i] for i in test]))
            out.setdefault(name, []).append(m["spearman_rho"])
    return {n: float(np.mean(v)) for n, v in out.items()}


def test_structure_ranks_an_overhead_bound_device_from_five_measurements(world: dict) -> None:
    s = _score(world, "overhead", 5, structure={}, flops={})
    assert s["structure"] > 0.85, s
    assert s["flops"] < 0.5, s  # MACs do not rank this device: the test has teeth


def test_transfer_prefers_the_device_s_own_evidence_when_the_sources_disagree(
    world: dict,
) -> None:
    before = ("prior", "nearest", "prior+residual", "flops", "additive")
    s = _score(world, "overhead", 10,
               transfer={"priors": world["priors"]},
               before={"kind": "transfer", "priors": world["priors"], "models": before})
    assert s["transfer"] > 0.85, s
    assert s["before"] < 0.6, s  # without the structure, the compute-bound sources mislead


def test_with_agreeing_sources_transfer_still_uses_them(world: dict) -> None:
    """A compute-bound target whose sources rank alike: the structure candidate must not
    take over from the prior devices."""
    priors = [world["priors"][1]]
    s = _score(world, "compute-a", 10, transfer={"priors": priors},
               before={"kind": "transfer", "priors": priors,
                       "models": ("prior", "nearest", "prior+residual", "flops", "additive")})
    assert s["transfer"] >= s["before"] - 0.01, s


def test_state_round_trip_and_refusals(world: dict) -> None:
    archs, y = world["archs"][:8], world["y"]["overhead"][:8]
    p = make_predictor("structure", SPACE).fit(archs, y)
    assert (p.coef_ >= 0).all()  # every cost non-negative
    q = predictor_from_state("structure", p.json_params(), p.get_state())
    np.testing.assert_array_equal(q.predict(world["archs"]), p.predict(world["archs"]))
    bad = dict(p.get_state(), coef=[1.0, 2.0])
    with pytest.raises(NASError, match="coef"):
        predictor_from_state("structure", p.json_params(), bad)
    with pytest.raises(ConfigError, match="at least 3 measurements"):
        make_predictor("structure", SPACE).fit(archs[:2], y[:2])


def test_a_language_model_s_structure_is_its_blocks_macs_and_bytes() -> None:
    sp = get_space("gpt_tiny")
    archs = sp.sample_many(30, seed=0)
    workload = {"phase": "decode", "context": 16}
    sf = structure_features("gpt_tiny", workload)
    x = sf.transform(archs)
    assert sf.names == ("blocks", "mmacs", "mbytes")
    assert (x[:, 0] == [a.n_layer for a in archs]).all()
    y = 0.05 * x[:, 0] + 0.01
    p = make_predictor("structure", "gpt_tiny", workload=workload).fit(archs, y)
    np.testing.assert_allclose(p.predict(archs), y, rtol=1e-6)
    with pytest.raises(ConfigError, match="workload"):
        structure_features(SPACE, workload)


def test_a_predictor_for_a_small_input_device_takes_its_side() -> None:
    from nas.latency._predictors import predictor_class

    for kind in ("structure", "transfer"):
        cls = predictor_class(kind)
        assert cls.create(SPACE, "cpu-1t-r32").input_resolution == 32  # type: ignore[attr-defined]
        assert cls.create(SPACE, "cpu-1t").input_resolution is None  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="input_resolution"):
        make_predictor("structure", SPACE, input_resolution=3).fit(
            get_space(SPACE).sample_many(5, seed=0), np.arange(1.0, 6.0))
