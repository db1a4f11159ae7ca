"""Once-for-All-style latency lookup tables: single blocks timed in ONNX Runtime.

Every layer slot of a subnet is an MBConv block whose configuration is ``(cin, cout, kernel,
expand, stride, squeeze-excite, activation, input size)``, and in these spaces the input size
of a slot is a function of the resolution. A table holds the latency of each distinct block
configuration, of the stem (with the fixed first block) per resolution and of the head per
final feature-map size, each exported alone and timed with the protocol of
:mod:`nas.measure._timing`. A subnet's estimate is the sum over its blocks.

Every ``sess.run`` carries a fixed overhead (Python binding, input/output copies) that a
network pays once but a sum of blocks pays once per block; it is measured on a trivial graph
and subtracted from every entry, then added back once.

Tables can be built on a grid of resolutions (``resolutions``); a resolution between grid
points is interpolated per entry linearly in the slot's input area.
"""

from __future__ import annotations

import io
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from nas._term import progress_bar
from nas.devices import DeviceProfile, get_device
from nas.errors import ConfigError
from nas.latency._features import LayerFeatures, _conv_out, layer_features
from nas.measure import (
    Timer,
    TimingConfig,
    environment_fingerprint,
    one_torch_thread,
    prepare_model,
)
from nas.space import SearchSpace, get_space

__all__ = ["LUT_VERSION", "build_lut", "lut_grid", "lut_keys", "lut_to_arrays"]

LUT_VERSION = 1


def lut_grid(space: str | SearchSpace, n: int | None) -> list[int]:
    """``n`` resolutions of ``space`` evenly spread from its smallest to its largest
    (all when ``n`` is None or at least their number)."""
    res = list(get_space(space).resolutions)
    if n is None or n >= len(res):
        return res
    if n < 2:
        raise ConfigError(f"lut_resolutions must be >= 2 or None, got {n}")
    idx = np.unique(np.round(np.linspace(0, len(res) - 1, n)).astype(int))
    return [res[i] for i in idx]


def _block_key(cin: int, cout: int, k: int, mid: int, stride: int, se_mid: int, act: str,
               hw: int) -> str:
    return f"mbconv:{cin},{cout},{k},{mid},{stride},{se_mid},{act},{hw}"


def lut_keys(space: str | SearchSpace, resolutions: Sequence[int]) -> dict[str, dict[str, Any]]:
    """Every table entry needed for ``resolutions``: key -> what to build and its input."""
    sp = get_space(space)
    spec = sp.spec
    lf = layer_features(sp)
    out: dict[str, dict[str, Any]] = {}
    for r in resolutions:
        ri = int(np.searchsorted(lf.resolutions, r))
        out[f"stem:{r}"] = {"part": "stem", "shape": (3, r, r)}
        for j, (s, _i, cin, cout, stride, se) in enumerate(sp.layer_plan):
            hw = int(lf.hw_in[ri, j])
            act = spec.stages[s].act
            for k in sp.kernel_sizes:
                for e in sp.expand_ratios:
                    mid = sp.mid_channels(cin, e)
                    se_mid = sp.se_channels(mid) if se else 0
                    key = _block_key(cin, cout, k, mid, stride, se_mid, act, hw)
                    out[key] = {"part": "block", "cin": cin, "cout": cout, "k": k, "mid": mid,
                                "stride": stride, "se_mid": se_mid, "act": act,
                                "shape": (cin, hw, hw)}
        hw_last = _last_hw(sp, lf, ri)
        out[f"head:{hw_last}"] = {"part": "head",
                                  "shape": (spec.stages[-1].channels, hw_last, hw_last)}
    return out


def _last_hw(sp: SearchSpace, lf: LayerFeatures, ri: int) -> int:
    # the last slot's stride, whether or not it is its stage's first layer (it is 1 else)
    return int(_conv_out(lf.hw_in[ri, -1], sp.layer_plan[-1][4]))


def _module(space: SearchSpace, spec_entry: dict[str, Any]) -> Any:
    import torch
    from torch import nn

    from nas.supernet import MBConv, conv_bn_act

    sp = space.spec
    torch.manual_seed(0)
    part = spec_entry["part"]
    if part == "stem":
        c0 = sp.stem.channels
        fb = sp.first_block
        return nn.Sequential(
            conv_bn_act(3, c0, sp.stem.kernel, sp.stem.stride, sp.stem.act),
            MBConv(c0, c0, fb.channels, fb.kernel, fb.stride, fb.act,
                   space.se_channels(c0) if fb.se else None, has_expand=False),
        )
    if part == "head":
        head, last = sp.head, sp.stages[-1].channels
        if head.final_expand is None:  # ProxylessNAS: feature mix (conv + BN) before pooling
            return nn.Sequential(
                conv_bn_act(last, head.feature_mix, 1, 1, head.act),
                nn.AdaptiveAvgPool2d(1), nn.Flatten(1),
                nn.Linear(head.feature_mix, sp.num_classes),
            )
        act = {"relu": nn.ReLU, "relu6": nn.ReLU6, "h_swish": nn.Hardswish}[head.act]
        return nn.Sequential(
            conv_bn_act(last, head.final_expand, 1, 1, head.act),
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(head.final_expand, head.feature_mix, 1, bias=False),
            act(), nn.Flatten(1), nn.Linear(head.feature_mix, sp.num_classes),
        )
    return MBConv(spec_entry["cin"], spec_entry["mid"], spec_entry["cout"], spec_entry["k"],
                  spec_entry["stride"], spec_entry["act"], spec_entry["se_mid"] or None)


def _export(module: Any, shape: tuple[int, ...]) -> bytes:
    import torch

    module = module.eval()
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(1, *shape),), buf,  # type: ignore[arg-type]
                          dynamo=False,
                          opset_version=17, input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                          do_constant_folding=True)
    return buf.getvalue()


def _trivial_model() -> bytes:
    """A one-op graph on a one-element input: what every ``sess.run`` costs at the least."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["input"], ["output"])], "overhead",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def build_lut(
    device: str | DeviceProfile, space: str | SearchSpace, *,
    resolutions: Sequence[int] | None = None, config: TimingConfig | None = None,
    progress: bool = True, address: str | None = None, lock_dir: str | None = None,
) -> dict[str, Any]:
    """Time every block configuration of ``space`` on ``device``; return the JSON table.

    Args:
        device: the device name or profile.
        space: the search space.
        resolutions: the grid of resolutions to time (default: all of the space's).
        config: the timing protocol's settings.
        progress: show a progress bar on stderr.
        address: a Ray address (the blocks are then timed as Ray tasks).
        lock_dir: folder of the device lock files.

    Returns:
        ``{"version", "device", "space", "resolutions", "overhead_ms", "entries": {key: ms},
        "build_s", "env"}``, JSON-serialisable.
    """
    profile = device if isinstance(device, DeviceProfile) else get_device(device)
    sp = get_space(space)
    grid = sorted(set(resolutions if resolutions is not None else sp.resolutions))
    bad = [r for r in grid if r not in sp.resolutions]
    if bad:
        raise ConfigError(
            f"LUT resolutions must be resolutions of space {sp.name}, got {bad}"
        )
    cfg = config or TimingConfig()
    timer = Timer(profile, lock_dir=lock_dir, address=address, config=cfg)
    keys = lut_keys(sp, grid)
    t0 = time.perf_counter()
    overhead = timer(_trivial_model(), 1, input_shape=(1,)).median_ms
    entries: dict[str, float] = {}
    with one_torch_thread(), progress_bar(
            f"LUT {sp.name} on {profile.name}", len(keys), enabled=progress,
            fields={"status": ""}, field_format="{task.fields[status]}") as advance:
        for key, entry in keys.items():
            shape = tuple(entry["shape"])
            model = prepare_model(_export(_module(sp, entry), shape), profile, 0,
                                  input_shape=shape)
            entries[key] = timer(model, 0, input_shape=shape).median_ms
            advance(status=f"{entries[key]:.3f} ms")
    return {
        "version": LUT_VERSION, "device": profile.name, "space": sp.name,
        "resolutions": grid, "overhead_ms": overhead, "entries": entries,
        "build_s": time.perf_counter() - t0,
        "env": environment_fingerprint(profile, cfg),
    }


def lut_to_arrays(
    table: dict[str, Any], space: str | SearchSpace
) -> tuple[np.ndarray, np.ndarray]:
    """Dense ``(R, L, K, E)`` block costs and ``(R,)`` fixed costs (stem, head, one run
    overhead) for every resolution of ``space``, in ms, from a table.

    Resolutions off the table's grid are interpolated per slot linearly in the input area.

    Raises:
        ConfigError: the table is of another space or lacks entries.
    """
    sp = get_space(space)
    if table.get("space") != sp.name:
        raise ConfigError(
            f"LUT is for space {table.get('space')!r}, not {sp.name!r}"
        )
    lf = layer_features(sp)
    grid = [int(r) for r in table["resolutions"]]
    entries: dict[str, float] = table["entries"]
    overhead = float(table.get("overhead_ms", 0.0))
    n_l, n_k, n_e = sp.n_layers, len(sp.kernel_sizes), len(sp.expand_ratios)
    grid_cost = np.zeros((len(grid), n_l, n_k, n_e))
    grid_fixed = np.zeros(len(grid))
    area = np.zeros((len(grid), n_l))
    for gi, r in enumerate(grid):
        ri = int(np.searchsorted(lf.resolutions, r))
        try:
            stem = entries[f"stem:{r}"]
            head = entries[f"head:{_last_hw(sp, lf, ri)}"]
            grid_fixed[gi] = stem + head - overhead  # 2 runs' overhead out, 1 back in
            for j, (s, _i, cin, cout, stride, se) in enumerate(sp.layer_plan):
                hw = int(lf.hw_in[ri, j])
                area[gi, j] = hw * hw
                for ki, k in enumerate(sp.kernel_sizes):
                    for ei, e in enumerate(sp.expand_ratios):
                        mid = sp.mid_channels(cin, e)
                        se_mid = sp.se_channels(mid) if se else 0
                        key = _block_key(cin, cout, k, mid, stride, se_mid,
                                         sp.spec.stages[s].act, hw)
                        grid_cost[gi, j, ki, ei] = max(entries[key] - overhead, 0.0)
        except KeyError as exc:
            raise ConfigError(f"LUT lacks entry {exc.args[0]!r}; rebuild it") from None
    res = np.asarray(sp.resolutions)
    g = np.asarray(grid)
    cost = np.zeros((len(res), n_l, n_k, n_e))
    fixed = np.zeros(len(res))
    stem_area = np.asarray(lf.fixed[:, lf.names.index("stem_area")])
    for ri, r in enumerate(res):
        hi = int(np.clip(np.searchsorted(g, r), 0, len(g) - 1))
        lo = hi if g[hi] == r or hi == 0 else hi - 1
        if r > g[-1]:
            lo = hi = len(g) - 1
        if lo == hi:
            cost[ri] = grid_cost[lo]
            fixed[ri] = grid_fixed[lo]
            continue
        a_lo, a_hi = area[lo], area[hi]
        a_r = lf.hw_in[ri].astype(np.float64) ** 2
        span = np.where(a_hi > a_lo, a_hi - a_lo, 1.0)
        t = np.where(a_hi > a_lo, (a_r - a_lo) / span, 0.0)[:, None, None]
        cost[ri] = grid_cost[lo] + t * (grid_cost[hi] - grid_cost[lo])
        r_lo, r_hi = np.searchsorted(lf.resolutions, [g[lo], g[hi]])
        s_lo, s_hi = stem_area[r_lo], stem_area[r_hi]
        tf = (stem_area[ri] - s_lo) / (s_hi - s_lo) if s_hi > s_lo else 0.0
        fixed[ri] = grid_fixed[lo] + tf * (grid_fixed[hi] - grid_fixed[lo])
    return cost, fixed
