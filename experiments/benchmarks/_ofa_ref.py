"""Once-for-All's own search, predictor and table (the ``ofa`` package) for the benchmarks.

The predictor and the table are loaded by ``tests/ofa_reference.py`` (imported here by path:
the trick that loads OFA's modules without torchvision and gdown lives there, once). This
module adds OFA's two evolutionary searches and the thin adapters they need, without changing
any of OFA's code:

- ``ofa.nas.search_algorithm.EvolutionFinder`` (OFA's library search; imports as it is):
  it asks its accuracy predictor for ``arch_encoder`` (samples and mutates architectures
  ``{ks, e, d, image_size}``) and ``predict_acc(list)``, and its efficiency predictor for
  ``get_efficiency(arch)``. :class:`LibraryAccuracy` and :class:`LibraryEfficiency` give it
  OFA's tutorial ``AccuracyPredictor`` (the one ``acc_predictor.pth`` belongs to) and
  ``LatencyTable`` in that shape, and OFA's own ``MobileNetArchEncoder`` built over the five
  resolutions of the Note10 table (its default list is ``[224]`` alone).
- ``ofa.tutorial.evolution_finder.EvolutionFinder`` (the search of OFA's tutorial notebook):
  takes the predictor and the table as they are; its ``ArchManager`` samples resolutions
  from ``[160, 176, 192, 208, 224]``, the table's five.
"""

from __future__ import annotations

import importlib.util
import random
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
#: the resolutions OFA's Note10 tables were measured at
TABLE_RESOLUTIONS = (160, 176, 192, 208, 224)


def ofa_installed() -> bool:
    return importlib.util.find_spec("ofa") is not None


def _load_file(name: str, path: Path, stubs: dict[str, types.ModuleType] | None = None) -> Any:
    """The module in ``path``, loaded under ``name`` with ``stubs`` in ``sys.modules`` while
    it executes (and the previous entries put back after)."""
    stubs = stubs or {}
    saved = {k: sys.modules.get(k) for k in stubs}
    sys.modules.update(stubs)
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None
        assert spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return mod


def reference_module() -> Any:
    """``tests/ofa_reference.py``, imported by path."""
    if "ofa_reference" not in sys.modules:
        sys.modules["ofa_reference"] = _load_file("ofa_reference",
                                                  ROOT / "tests" / "ofa_reference.py")
    return sys.modules["ofa_reference"]


def _ofa_root() -> Path:
    spec = importlib.util.find_spec("ofa")
    assert spec is not None
    assert spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations)))


def mobilenet_arch_encoder(resolutions: tuple[int, ...] = TABLE_RESOLUTIONS) -> Any:
    """OFA's ``MobileNetArchEncoder`` over ``resolutions``.

    Its file imports ``ofa.imagenet_classification.networks`` (for the ResNet encoder, unused
    here), which pulls in torchvision: that one module is a stub while the file loads.
    """
    stub = types.ModuleType("ofa.imagenet_classification.networks")
    stub.ResNets = None  # type: ignore[attr-defined]
    mod = _load_file("_ofa_reference_arch_encoder",
                     _ofa_root() / "nas" / "accuracy_predictor" / "arch_encoder.py",
                     {"ofa.imagenet_classification.networks": stub})
    return mod.MobileNetArchEncoder(image_size_list=list(resolutions), ks_list=[3, 5, 7],
                                    expand_list=[3, 4, 6], depth_list=[2, 3, 4])


def library_evolution_finder() -> Any:
    """``ofa.nas.search_algorithm.EvolutionFinder``."""
    from ofa.nas.search_algorithm import EvolutionFinder

    return EvolutionFinder


def tutorial_evolution_finder() -> Any:
    """``ofa.tutorial.evolution_finder.EvolutionFinder`` (loaded from its file: the tutorial
    package's ``__init__`` imports torchvision)."""
    mod = _load_file("_ofa_reference_evolution_finder",
                     _ofa_root() / "tutorial" / "evolution_finder.py")
    assert list(mod.ArchManager().resolutions) == list(TABLE_RESOLUTIONS)
    return mod.EvolutionFinder


def spec(arch: dict[str, Any]) -> dict[str, Any]:
    """An architecture as OFA's tutorial predictor and table take it: ``{ks, e, d, r: [r]}``
    (from ``image_size`` or from ``r`` as an int or a one-element list)."""
    r = arch["image_size"] if "image_size" in arch else arch["r"]
    r = int(r[0]) if isinstance(r, (list, tuple)) else int(r)
    return {"ks": [int(v) for v in arch["ks"]], "e": [int(v) for v in arch["e"]],
            "d": [int(v) for v in arch["d"]], "r": [r]}


class LibraryAccuracy:
    """OFA's tutorial ``AccuracyPredictor`` in the shape the library's ``EvolutionFinder``
    calls: ``arch_encoder`` and ``predict_acc``."""

    def __init__(self, predictor: Any, arch_encoder: Any) -> None:
        self.predictor = predictor
        self.arch_encoder = arch_encoder

    def predict_acc(self, archs: list[dict[str, Any]]) -> Any:
        return self.predictor.predict_accuracy([spec(a) for a in archs])


class LibraryEfficiency:
    """OFA's ``LatencyTable`` in the shape the library's ``EvolutionFinder`` calls."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def get_efficiency(self, arch: dict[str, Any]) -> float:
        return float(self.table.predict_efficiency(spec(arch)))


def seed_everything(seed: int) -> None:
    """OFA's searches draw from ``random`` and ``numpy.random`` (and torch for nothing here)."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
