"""Once-for-All's own code as the reference in tests: ``ofa.tutorial``'s ``AccuracyPredictor``
and ``LatencyTable`` from the ``ofa`` package on PyPI (``pip install --no-deps ofa``).

Importing ``ofa.tutorial`` pulls in torchvision and gdown (its evaluation helpers), so the two
modules are loaded from their files alone, with ``ofa.utils.download_url`` replaced by a stub
that refuses to download (every path is given locally) and ``yaml.load`` (called without a
Loader, which PyYAML 6 refuses) by ``yaml.safe_load``. Tests call :func:`ofa_tutorial`, which
skips when the package is absent. (Importable because tests/conftest.py puts this folder on
``sys.path``.)
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import yaml

#: OFA's published files (see its README)
OFA_FILES = Path(__file__).resolve().parents[2] / "shared" / "ofa"


def _no_download(*args: Any, **kwargs: Any) -> str:
    raise AssertionError(f"the OFA reference tried to download {args[:1]}")


def ofa_tutorial() -> types.SimpleNamespace:
    """``AccuracyPredictor`` and ``LatencyTable`` of the installed ``ofa`` package.

    Skips the calling test when ``ofa`` is not installed.
    """
    pytest.importorskip("ofa", reason="the ofa package (pip install --no-deps ofa) is the "
                                      "reference implementation")
    spec = importlib.util.find_spec("ofa")
    assert spec is not None
    assert spec.submodule_search_locations
    root = Path(next(iter(spec.submodule_search_locations))) / "tutorial"
    stub = types.ModuleType("ofa.utils")
    stub.download_url = _no_download  # type: ignore[attr-defined]
    saved = sys.modules.get("ofa.utils")
    sys.modules["ofa.utils"] = stub
    try:
        mods = {}
        for name in ("accuracy_predictor", "latency_table"):
            mspec = importlib.util.spec_from_file_location(f"_ofa_reference_{name}",
                                                           root / f"{name}.py")
            assert mspec is not None
            assert mspec.loader is not None
            mod = importlib.util.module_from_spec(mspec)
            mspec.loader.exec_module(mod)
            mods[name] = mod
    finally:
        if saved is None:
            sys.modules.pop("ofa.utils", None)
        else:
            sys.modules["ofa.utils"] = saved
    mods["latency_table"].yaml = types.SimpleNamespace(load=yaml.safe_load)
    return types.SimpleNamespace(AccuracyPredictor=mods["accuracy_predictor"].AccuracyPredictor,
                                 LatencyTable=mods["latency_table"].LatencyTable,
                                 LatencyEstimator=mods["latency_table"].LatencyEstimator)


def ofa_accuracy_predictor(path: Path) -> Any:
    """OFA's ``AccuracyPredictor`` with the weights in ``path`` loaded by OFA's own way of
    loading them (``load_state_dict``), on the CPU."""
    import torch

    ref = ofa_tutorial().AccuracyPredictor(pretrained=False, device="cpu")
    ref.model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return ref


def ofa_latency_table(folder: Path, resolutions: tuple[int, ...] = (160, 176, 192, 208, 224)
                      ) -> Any:
    """OFA's ``LatencyTable`` over the ``{r}_lookup_table.yaml`` files in ``folder``."""
    t = ofa_tutorial()
    table = t.LatencyTable.__new__(t.LatencyTable)
    table.latency_tables = {r: t.LatencyEstimator(url=str(folder / f"{r}_lookup_table.yaml"))
                            for r in resolutions}
    return table


def ofa_elastic_networks() -> types.SimpleNamespace:
    """``OFAMobileNetV3`` and ``OFAProxylessNASNets``, the supernets of the installed ``ofa``.

    ``ofa.utils`` imports ``ofa.utils.my_dataloader`` (ImageNet data loading), which imports
    torchvision; the networks use none of it, so that one module is an empty stub. Skips the
    calling test when ``ofa`` is not installed.
    """
    pytest.importorskip("ofa", reason="the ofa package (pip install --no-deps ofa) is the "
                                      "reference implementation")
    name = "ofa.utils.my_dataloader"
    if "ofa.imagenet_classification.elastic_nn.networks" not in sys.modules:
        saved = sys.modules.get(name)
        sys.modules[name] = types.ModuleType(name)
        try:
            importlib.import_module("ofa.imagenet_classification.elastic_nn.networks")
        finally:
            if saved is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = saved
    nets = sys.modules["ofa.imagenet_classification.elastic_nn.networks"]
    return types.SimpleNamespace(OFAMobileNetV3=nets.OFAMobileNetV3,
                                 OFAProxylessNASNets=nets.OFAProxylessNASNets)
