"""Once-for-All's published ImageNet accuracy predictor, converted, and the ``ofa-imagenet`` proxy.

OFA (Cai et al., ICLR 2020; https://github.com/mit-han-lab/once-for-all, MIT licence)
publishes ``acc_predictor.pth`` in ``han-cai/files`` (folder ``ofa/``): an MLP
(128 -> 400 -> 400 -> 400 -> 1, ReLU) that predicts the top-1 accuracy (a fraction, on OFA's
held-out slice of the ImageNet training set) of a subnet of the MobileNetV3 space from a
128-long one-hot encoding:

- per layer slot (20 = 5 stages x 4), a one-hot of the kernel size (3, 5, 7): 60 columns;
- per layer slot, a one-hot of the expand ratio (3, 4, 6): 60 columns; both all zero at
  slots beyond their stage's depth;
- the resolution in 8 buckets of 16 pixels from 112 (``(r - 112) // 16``): 8 columns.

:class:`OFAAccuracyPredictor` (kind ``ofa``) is that MLP on that encoding;
:func:`import_ofa_accuracy_predictor` converts anyone's ``acc_predictor.pth`` into our JSON
predictor file (read with ``torch.load(weights_only=True)``: tensors only, never objects).
The package ships OFA's own file converted (``nas/_data/predictors/ofa-imagenet.json``), which
the ``ofa-imagenet`` proxy uses: no supernet, no data, space ``ofa_mbv3`` only.
"""

from __future__ import annotations

import base64
import functools
import io
import pickle
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from nas._io import read_bytes, sha256_file
from nas.errors import ArchitectureError, ConfigError, NASError
from nas.proxies._base import Proxy, ProxyContext, register_proxy
from nas.proxies._predictors import (
    ACCURACY_PREDICTORS,
    AccuracyPredictor,
    MLPAccuracyPredictor,
    MLPLayers,
    load_accuracy_predictor,
    save_accuracy_predictor,
)
from nas.space import ArchArrays, Architecture, SearchSpace, get_space

if TYPE_CHECKING:  # torch only to read a .pth file: the predictor itself runs in numpy
    import torch

__all__ = [
    "OFA_PROVENANCE",
    "OFAAccuracyPredictor",
    "OFAImageNetProxy",
    "import_ofa_accuracy_predictor",
    "read_ofa_accuracy_predictor",
    "shipped_accuracy_predictor_path",
]

#: what the shipped conversion is, and under which licence
OFA_PROVENANCE = {
    "source": "https://github.com/han-cai/files/blob/master/ofa/acc_predictor.pth",
    "authors": "Han Cai, Chuang Gan, Tianzhe Wang, Zhekai Zhang, Song Han: Once-for-All: "
               "Train One Network and Specialize it for Efficient Deployment, ICLR 2020",
    "code": "https://github.com/mit-han-lab/once-for-all",
    "license": "MIT (Once-for-All)",
    "predicts": "top-1 accuracy (a fraction) on OFA's held-out slice of the ImageNet training "
                "set, for subnets of the MobileNetV3 space (ofa_mbv3)",
}
_SHIPPED = Path(__file__).resolve().parents[1] / "_data" / "predictors"
#: the space OFA's predictor was trained for, and the input size of its encoding there
_OFA_SPACE = "ofa_mbv3"
_OFA_BUCKETS = {"resolution_start": 112, "resolution_step": 16, "resolution_buckets": 8}


def shipped_accuracy_predictor_path(name: str = "ofa-imagenet") -> Path:
    """The JSON file of an accuracy predictor shipped with the package."""
    return _SHIPPED / f"{name}.json"


# ---------------------------------------------------------------------- the encoding
def ofa_encode(space: SearchSpace, a: ArchArrays, start: int, step: int,
               buckets: int) -> np.ndarray:
    """OFA's accuracy-predictor encoding of ``a``: kernel one-hot per slot, expand one-hot per
    slot (zeros at slots that do not run), resolution bucket ``(r - start) // step``.

    Raises:
        ArchitectureError: a resolution outside the buckets.
    """
    n = len(a)
    ks = a.ks[:, :, None] == np.asarray(space.kernel_sizes)[None, None, :]
    e = a.e[:, :, None] == np.asarray(space.expand_ratios)[None, None, :]
    idx = (a.r - start) // step
    bad = (a.r < start) | (idx >= buckets)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ArchitectureError(
            f"r must be in [{start}, {start + step * buckets - 1}] for this accuracy "
            f"predictor (its resolution buckets), got {int(a.r[i])} at row {i}")
    r = np.zeros((n, buckets), dtype=bool)
    r[np.arange(n), idx] = True
    return np.concatenate([ks.reshape(n, -1), e.reshape(n, -1), r], axis=1).astype(np.float32)


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype="<f4").tobytes()).decode("ascii")


def _unb64(text: str, shape: Sequence[int], what: str) -> np.ndarray:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
        arr = np.frombuffer(raw, dtype="<f4").reshape(tuple(shape))
    except (ValueError, TypeError) as exc:
        raise NASError(f"accuracy predictor {what}: not base64 float32 of shape "
                       f"{list(shape)} ({exc})") from None
    return arr.astype(np.float32)


@ACCURACY_PREDICTORS.register
class OFAAccuracyPredictor(MLPAccuracyPredictor):
    """Once-for-All's accuracy predictor exactly: its MLP on its own 128-long encoding.

    The encoding (``encoding = "ofa"``) is the kernel and expand one-hots of the ``onehot``
    encoding followed by the resolution in ``resolution_buckets`` buckets of
    ``resolution_step`` pixels from ``resolution_start`` (by default from the space's smallest
    resolution, enough buckets to cover its largest). Fitting trains the MLP as
    :class:`~nas.proxies.MLPAccuracyPredictor` does; OFA's published weights come in through
    :func:`import_ofa_accuracy_predictor` (112, 16, 8: OFA's buckets).

    Weights are stored as base64 little-endian float32, so a saved file restores the same
    bits (and stays a quarter of the size of decimal JSON).
    """

    name = "ofa"
    description = ("Once-for-All's MLP on its own 128-long encoding (resolution in buckets); "
                   "`nas accuracy import-ofa` reads OFA's published weights")
    tags = frozenset({"ofa"})
    encoding = "ofa"

    # sklearn's estimator protocol: one keyword-only argument per hyper-parameter
    def __init__(  # noqa: PLR0913
        self, *, space: str | None = None, resolution_start: int | None = None,
        resolution_step: int = 16, resolution_buckets: int | None = None,
        hidden_size: int = 400, n_layers: int = 3, epochs: int = 500, lr: float = 1e-3,
        weight_decay: float = 1e-4, batch_size: int = 256, random_state: int = 0,
    ) -> None:
        self.space = space
        self.resolution_start = resolution_start
        self.resolution_step = resolution_step
        self.resolution_buckets = resolution_buckets
        self.hidden_size = hidden_size
        self.n_layers = n_layers
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.random_state = random_state

    def _buckets(self, sp: SearchSpace) -> tuple[int, int, int]:
        step = int(self.resolution_step)
        start = (min(sp.resolutions) if self.resolution_start is None
                 else int(self.resolution_start))
        n = (int(self.resolution_buckets) if self.resolution_buckets is not None
             else (max(sp.resolutions) - start) // step + 1)
        return start, step, n

    def encoding_size(self) -> int:
        """The number of columns of OFA's encoding in the predictor's space."""
        if self.space is None:
            raise ConfigError("OFAAccuracyPredictor(space=None) has no encoding; set space=")
        sp = get_space(self.space)
        return sp.n_layers * (len(sp.kernel_sizes) + len(sp.expand_ratios)) + \
            self._buckets(sp)[2]

    def encode(self, archs: Sequence[Architecture | dict[str, Any] | str] | ArchArrays
               ) -> np.ndarray:
        """Architectures (or arrays) of the predictor's space in OFA's encoding."""
        if self.space is None:
            raise ConfigError("OFAAccuracyPredictor(space=None) takes a feature matrix; "
                              "set space= to pass architectures")
        sp = get_space(self.space)
        a = archs if isinstance(archs, ArchArrays) else sp.to_arrays(
            [x if isinstance(x, Architecture) else sp.parse(x) for x in archs])
        return ofa_encode(sp, a, *self._buckets(sp))

    def _learned_state(self) -> dict[str, Any]:
        return {"base_acc": self.base_acc_, "y_scale": self.y_scale_, "weights": "base64 <f4",
                "layers": [{"shape": list(w.shape), "weight": _b64(w),
                            "bias": None if b is None else _b64(b)}
                           for w, b in self.layers_]}

    def _restore(self, state: Mapping[str, Any]) -> None:
        layers: MLPLayers = []
        for i, layer in enumerate(state["layers"]):
            shape = [int(v) for v in layer["shape"]]
            w = _unb64(layer["weight"], shape, f"layer {i} weight")
            b = None if layer["bias"] is None else _unb64(layer["bias"], shape[:1],
                                                          f"layer {i} bias")
            layers.append((w, b))
        self.layers_ = layers
        self.base_acc_ = float(state["base_acc"])
        self.y_scale_ = float(state["y_scale"])


# ---------------------------------------------------------------------- conversion
_KEY = re.compile(r"^(?:model\.)?(\d+)\.(weight|bias)$")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def read_ofa_accuracy_predictor(path: Path | str, space: str = _OFA_SPACE
                                ) -> OFAAccuracyPredictor:
    """OFA's ``acc_predictor.pth`` (or any MLP state_dict in its layout) as a predictor.

    The file is read with ``torch.load(weights_only=True)``: only tensors and plain containers
    are unpickled, so a pickle that carries code is refused, never run.

    Args:
        path: the ``.pth`` file (torch's legacy or zip serialization).
        space: the space it predicts for (OFA's: ``ofa_mbv3``); it must have OFA's choices
            (kernels 3, 5, 7; expand ratios 3, 4, 6; 5 stages of up to 4 layers).

    Raises:
        ConfigError: a missing file, a file that is not a state_dict of tensors, or tensors of
            the wrong names or shapes (one line naming the key).
    """
    path = Path(path)
    sp = get_space(space)
    _check_ofa_choices(sp)
    found = _linear_layers(path, _read_state_dict(path))
    est = OFAAccuracyPredictor(space=sp.name, **_OFA_BUCKETS)
    layers = _mlp_layers(path, found, est.encoding_size())
    est.hidden_size = int(layers[0][0].shape[0])
    est.n_layers = len(layers) - 1
    est.layers_ = [(w.numpy().copy(), None if b is None else b.numpy().copy())
                   for w, b in layers]
    est.base_acc_ = 0.0  # OFA's final bias is its offset; outputs are used as they are
    est.y_scale_ = 1.0
    est.n_features_in_ = est.encoding_size()
    est.n_train_ = 0  # converted, not fitted here
    return est


def _check_ofa_choices(sp: SearchSpace) -> None:
    """``sp`` has the choices OFA's encoding is laid out for."""
    want: dict[str, Any] = {"kernel_sizes": [3, 5, 7], "expand_ratios": [3, 4, 6],
                            "n_layers": 20}
    for field, value in want.items():
        have = getattr(sp, field)
        if (list(have) if isinstance(have, Sequence) else have) != value:
            raise ConfigError(f"space {sp.name}: {field} = {have!r}: OFA's accuracy "
                              f"predictor encodes {value!r}")


def _read_state_dict(path: Path) -> dict[Any, Any]:
    """The state_dict in ``path`` (bare or as ``{"state_dict": ...}``), unpickling tensors and
    plain containers only."""
    import torch

    data = read_bytes(path, "OFA accuracy predictor")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols
            sd = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError:
        # torch's own message advises weights_only=False, which is what must not be done
        raise ConfigError(f"OFA accuracy predictor {path}: not a weights-only torch file (it "
                          "holds Python objects besides tensors, or is not a torch file; "
                          "refused unread, since unpickling objects can run code)") from None
    except Exception as exc:  # torch raises many types for a bad file; all mean "refused"
        raise ConfigError(f"OFA accuracy predictor {path}: not a weights-only torch file "
                          f"(truncated or corrupt: {_first_line(exc)})") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not sd:
        raise ConfigError(f"OFA accuracy predictor {path}: expected a state_dict (a dict of "
                          f"tensors), got {type(sd).__name__}")
    return sd


def _linear_layers(path: Path, sd: dict[Any, Any]) -> dict[int, dict[str, torch.Tensor]]:
    """``{index: {"weight": ..., "bias": ...}}`` of the state_dict's Linear layers."""
    import torch

    found: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        m = _KEY.match(str(key))
        if m is None or not isinstance(value, torch.Tensor):
            raise ConfigError(f"OFA accuracy predictor {path}: key {key!r} is not a Linear "
                              "layer's weight or bias tensor (expected '0.weight', "
                              "'0.bias', ..., '6.bias')")
        found.setdefault(int(m.group(1)), {})[m.group(2)] = value
    return found


def _mlp_layers(path: Path, found: dict[int, dict[str, torch.Tensor]], width: int
                ) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """The Linear layers in order, checked to chain from ``width`` inputs to one output."""
    import torch

    layers: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    for i, idx in enumerate(sorted(found)):
        w, b = found[idx].get("weight"), found[idx].get("bias")
        if idx != 2 * i:
            raise ConfigError(f"OFA accuracy predictor {path}: layer keys {sorted(found)}: "
                              "expected Linear layers at 0, 2, 4, ... (ReLU between)")
        if w is None or w.ndim != 2 or w.shape[1] != width:
            raise ConfigError(f"OFA accuracy predictor {path}: {idx}.weight has shape "
                              f"{None if w is None else list(w.shape)}, expected [*, {width}]")
        if b is not None and tuple(b.shape) != (w.shape[0],):
            raise ConfigError(f"OFA accuracy predictor {path}: {idx}.bias has shape "
                              f"{list(b.shape)}, expected [{w.shape[0]}]")
        if not (torch.isfinite(w).all() and (b is None or torch.isfinite(b).all())):
            raise ConfigError(f"OFA accuracy predictor {path}: layer {idx} holds NaN or "
                              "infinite weights")
        layers.append((w.float(), None if b is None else b.float()))
        width = w.shape[0]
    if width != 1 or len(layers) < 2:
        raise ConfigError(f"OFA accuracy predictor {path}: the last layer has {width} "
                          f"outputs and there are {len(layers)} layers; expected an MLP "
                          "ending in 1 output")
    return layers


def import_ofa_accuracy_predictor(src: Path | str, out: Path | str,
                                  space: str = _OFA_SPACE) -> Path:
    """Convert OFA's ``acc_predictor.pth`` at ``src`` into our predictor file ``out`` (JSON,
    written atomically, only once the whole file converted); returns ``out``.

    Raises:
        ConfigError: see :func:`read_ofa_accuracy_predictor`; nothing is written then.
    """
    est = read_ofa_accuracy_predictor(src, space)
    return save_accuracy_predictor(
        est, out, converted_from=Path(src).name, sha256=sha256_file(src),
        **{k: v for k, v in OFA_PROVENANCE.items() if k != "predicts"},
        predicts=OFA_PROVENANCE["predicts"].replace(_OFA_SPACE, space))


# ---------------------------------------------------------------------- the proxy
@functools.cache
def _shipped_model() -> AccuracyPredictor:
    """The shipped predictor, read once per process: package data does not change under a
    running process, and a search asks for it several times (engine choice, checks, scoring;
    about 30 ms a read)."""
    return load_accuracy_predictor(shipped_accuracy_predictor_path())


@register_proxy
class OFAImageNetProxy(Proxy):
    """OFA's published ImageNet accuracy predictor (shipped, converted): a predicted top-1
    accuracy for subnets of ``ofa_mbv3``; needs no supernet and no data."""

    name = "ofa-imagenet"
    description = ("Once-for-All's published ImageNet accuracy predictor (top-1, a fraction; "
                   "space ofa_mbv3 only; no supernet or data needed)")
    #: the spaces it can score
    spaces: ClassVar[tuple[str, ...]] = (_OFA_SPACE,)
    #: one space of the ofa family, not all of it: its tag names the space (nas._plugin)
    tags = frozenset(spaces)
    cacheable = False

    @classmethod
    def check_space(cls, space: str) -> None:
        """Raise :class:`ConfigError` unless the proxy can score ``space``."""
        if space not in cls.spaces:
            raise ConfigError(f"proxy {cls.name!r} predicts for space "
                              f"{', '.join(cls.spaces)} only (OFA's ImageNet predictor), "
                              f"not {space!r}")

    def array_scorer(self, space: SearchSpace) -> Callable[[ArchArrays], np.ndarray]:
        self.check_space(space.name)
        model = _shipped_model()
        return model.predict

    def _score(self, archs: Sequence[Architecture], ctx: ProxyContext) -> np.ndarray:
        self.check_space(ctx.space.name)
        key = ("accuracy_predictor", self.name)
        if key not in ctx._memo:
            ctx._memo[key] = _shipped_model()
        model: AccuracyPredictor = ctx._memo[key]
        return model.predict(list(archs))
