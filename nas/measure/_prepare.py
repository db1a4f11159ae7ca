"""Models as a device runs them: fp32 as exported, or quantized to int8 (statically for
images, dynamically for language models).

Subnets and lookup-table blocks are exported with one torch thread
(:func:`one_torch_thread`): OpenMP workers left spinning after a parallel export would
otherwise compete with the timing that follows.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from nas.devices import DeviceProfile
from nas.errors import ConfigError
from nas.measure._timing import TimingError

__all__ = ["one_torch_thread", "prepare_model", "quantize_dynamic_int8", "quantize_int8",
           "with_input_side"]


class _RandomReader:
    """Calibration batches for ``quantize_static``: standardised random images.

    Inputs of the networks are normalised images, so standard-normal pixels have the right
    range; latency does not depend on the calibrated scales anyway.
    """

    def __init__(self, input_name: str, shape: tuple[int, ...], n_batches: int, seed: int):
        rng = np.random.default_rng(seed)
        self._batches = iter(
            [{input_name: rng.standard_normal(shape).astype(np.float32)}
             for _ in range(n_batches)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)

    def rewind(self) -> None:  # pragma: no cover - not used by MinMax calibration
        pass


def quantize_int8(
    model: bytes, resolution: int, *, per_channel: bool = True, n_batches: int = 4,
    seed: int = 0, input_name: str = "input", input_shape: tuple[int, ...] | None = None,
) -> bytes:
    """Static QDQ int8 quantization of an fp32 ONNX model with ORT's quantization tool.

    Pre-processing (shape inference and ORT's graph optimisation) first, as ORT recommends;
    then u8 activations and s8 weights (the x86 / ARM fast path), per-channel weight scales
    (the accuracy a deployment would want; it costs no latency), MinMax calibration on
    ``n_batches`` random batches.

    Raises:
        TimingError: if quantization fails.
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="nas-int8-") as tmp:
        src, pre, out = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        src.write_bytes(model)
        shape = tuple(input_shape) if input_shape is not None else (3, resolution, resolution)
        reader = _RandomReader(input_name, (1, *shape), n_batches, seed)
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            quantize_static(
                str(pre), str(out), reader, quant_format=QuantFormat.QDQ,
                per_channel=per_channel, activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
            )
        except Exception as exc:  # the quantization tool raises many types
            raise TimingError(
                f"int8 quantization failed: {type(exc).__name__}: {exc}"
            ) from exc
        return out.read_bytes()


def quantize_dynamic_int8(model: bytes) -> bytes:
    """Dynamic int8 quantisation of a language model's linear layers (``MatMul``/``Gemm``
    weights in int8, activations quantised per call: no calibration), with ORT's tool: what
    a deployment of a small language model on a CPU does.

    Raises:
        TimingError: if quantization fails.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="nas-int8-") as tmp:
        src, pre, out = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        src.write_bytes(model)
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            quantize_dynamic(str(pre), str(out), weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul", "Gemm"])
        except Exception as exc:  # the quantization tool raises many types
            raise TimingError(
                f"int8 quantization failed: {type(exc).__name__}: {exc}"
            ) from exc
        return out.read_bytes()


def prepare_model(
    model: bytes, profile: DeviceProfile, resolution: int, *, input_name: str = "input",
    input_shape: tuple[int, ...] | None = None,
) -> bytes:
    """The model as the device runs it: unchanged for fp32; for int8, statically quantised
    (images: calibrated on random batches) or, for a profile with a language-model workload,
    dynamically (:func:`quantize_dynamic_int8`). A profile with an ``input_resolution``
    first declares that side as the image input's (:func:`with_input_side`)."""
    if profile.input_resolution is not None:
        model = with_input_side(model, profile.input_resolution, input_name)
        resolution = profile.input_resolution
        input_shape = None
    if profile.precision == "fp32":
        return model
    if profile.precision == "int8" and profile.workload is not None:
        return quantize_dynamic_int8(model)
    if profile.precision == "int8":
        return quantize_int8(model, resolution, input_name=input_name, input_shape=input_shape)
    raise ConfigError(
        f"precision must be 'fp32' or 'int8', got {profile.precision!r} (device {profile.name})"
    )


def with_input_side(model: bytes, side: int, input_name: str = "input") -> bytes:
    """``model`` with its image input (``batch x 3 x H x W``) declared ``side x side``, the
    shapes ONNX Runtime infers following from it (every other declared shape is dropped).

    Raises:
        TimingError: no 4-d input named ``input_name``, or a graph that cannot run at that
            side (checked by shape inference).
    """
    import onnx

    proto = onnx.load_from_string(model)
    inputs = [i for i in proto.graph.input if i.name == input_name]
    dims = inputs[0].type.tensor_type.shape.dim if inputs else []
    if len(dims) != 4:
        raise TimingError(f"input_resolution needs a 4-d image input {input_name!r}; the "
                          "model has none")
    for d in dims[2:]:
        d.Clear()
        d.dim_value = side
    del proto.graph.value_info[:]
    try:
        proto = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    except Exception as exc:  # onnx raises several types
        raise TimingError(f"the model cannot run on {side}x{side} inputs: "
                          f"{type(exc).__name__}: {exc}") from exc
    del proto.graph.value_info[:]
    return proto.SerializeToString()


def prepare_cached(profile: DeviceProfile, fp32: bytes, resolution: int,
                   cache: dict[str, bytes] | None = None) -> bytes:
    """``prepare_model``, keeping one model per precision and input side in ``cache`` (one
    subnet's models shared by its devices)."""
    if cache is None:
        return prepare_model(fp32, profile, resolution)
    key = f"{profile.precision}@{profile.input_resolution or 'own'}"
    if key not in cache:
        cache[key] = prepare_model(fp32, profile, resolution)
    return cache[key]


@contextlib.contextmanager
def one_torch_thread(*, only_if_loaded: bool = False) -> Iterator[None]:
    """Torch on one thread for small graphs: exports (idle OpenMP workers that spin after a
    parallel export would compete with the timing that follows it) and predictors scoring a
    search's generations (on 2 cores, two threads took 7.4 s for what one does in 0.9 s).

    Args:
        only_if_loaded: do nothing (and do not import torch) when torch is not loaded yet,
            e.g. for a search whose predictors need none.
    """
    if only_if_loaded and "torch" not in sys.modules:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
