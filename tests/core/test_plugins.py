"""Plug-ins from another package, as a user installs them: a package with a ``nas.plugins``
entry point, found on ``PYTHONPATH`` (its ``.dist-info`` folder declares the entry point),
listed by ``nas plugins list`` and checked by ``nas.testing`` in that package's own tests.

Every run is a subprocess: entry points are read once per process, from the installed
distributions of that process's path.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from nas._plugin import NAME_RULE, REGISTRIES, check_plugin_name, list_plugins, registry_labels
from nas._registry import Registry
from nas.errors import UnknownNameError
from nas.testing import check_plugin, contract_checks

#: a latency kind and a device of another package (the kind passes every check)
GOOD = '''
import numpy as np

from nas.devices import DEVICES, DeviceProfile
from nas.latency import PREDICTORS, LatencyPredictor
from nas.space import get_space


@PREDICTORS.register
class ParamsLinear(LatencyPredictor):
    """Least squares on a subnet's parameters, MACs, running layers and pixels."""

    name = "params-linear"
    description = "least squares on parameters, MACs, layers and pixels (an example plug-in)"
    tags = frozenset({"ofa"})

    def __init__(self, *, space: str = "ofa_mbv3", pixels: bool = True) -> None:
        self.space = space
        self.pixels = pixels

    def _X(self, a):
        costs = get_space(self.space).costs(a)
        cols = [costs["params"], costs["macs"], (a.ks > 0).sum(axis=1), np.ones(len(a))]
        if self.pixels:
            cols.append(a.r.astype(np.float64) ** 2)
        return np.stack([np.asarray(c, dtype=np.float64) for c in cols], axis=1)

    def _fit(self, a, y):
        X, w = self._X(a), 1.0 / y
        scale = np.abs(X).max(axis=0)
        coef, *_ = np.linalg.lstsq(X / scale * w[:, None], y * w, rcond=None)
        self.coef_ = coef / scale

    def _predict(self, a):
        return self._X(a) @ self.coef_

    def _state(self):
        return {"coef": self.coef_.tolist()}

    def _set_state(self, state):
        self.coef_ = np.asarray(state["coef"], dtype=np.float64)


DEVICES.register(DeviceProfile("example-board", intra_op_threads=2, placement="ray",
                               ray_resource="device:example-board"))
'''

#: a kind that breaks the contract: two lines of description, predictions of shape (n, 1)
BROKEN = '''
import numpy as np

from nas.latency import PREDICTORS, FlopsPredictor


@PREDICTORS.register
class BrokenLinear(FlopsPredictor):
    name = "broken-linear"
    description = "flops,\\nbut broken"

    def _predict(self, a):
        return super()._predict(a)[:, None]
'''

#: what a plug-in package's own test looks like
PLUGIN_TEST = '''
from nas.latency import PREDICTORS
from nas.testing import parametrize_with_checks


@parametrize_with_checks(PREDICTORS, [{kind!r}])
def test_kind(plugin, check):
    check(plugin)
'''


def _package(root: Path, module: str, dist: str, source: str) -> Path:
    """``module`` (holding ``source``) and its ``.dist-info`` declaring the entry point, in
    ``root``, as pip would install them."""
    root.mkdir(parents=True)
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[nas.plugins]\n{module} = {module}\n")
    return root


def _run(args: list[str], path: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(path), "NAS_DEVICES_DIR": str(cwd / "devices")}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=600)


def _nas(args: list[str], path: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return _run(["-m", "nas.cli", *args], path, cwd)


def _pytest(kind: str, path: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    test = cwd / "test_plugin_contract.py"
    test.write_text(PLUGIN_TEST.format(kind=kind))
    return _run(["-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", "--rootdir",
                 str(cwd), str(test)], path, cwd)


# ---------------------------------------------------------------------- in this process
def test_every_registry_is_listed_with_the_keys_of_the_contract() -> None:
    rows, _ = list_plugins()
    assert {r["registry"] for r in rows} == set(registry_labels())
    assert all(set(r) == {"registry", "name", "description", "tags", "source"} for r in rows)
    kinds = [r for r in rows if r["registry"] == "latency-kinds"]
    assert {"flops", "additive"} <= {r["name"] for r in kinds}
    assert all("ofa" in r["tags"] and r["source"] == "nas" for r in kinds)
    # the kinds on features alone price the gpt family too (per device workload)
    assert {r["name"] for r in kinds if "gpt" in r["tags"]} == {"flops", "additive", "gbdt",
                                                               "structure", "transfer"}
    assert [r["registry"] for r in list_plugins(["devices"])[0]] == ["devices"] * len(
        list_plugins(["devices"])[0])
    with pytest.raises(UnknownNameError, match="unknown registry 'nope'; known: spaces, "):
        list_plugins(["nope"])
    assert [label for label, _ in REGISTRIES] == registry_labels()


def test_the_command_filters_by_registry_and_refuses_an_unknown_one(run_nas: Any) -> None:
    code, out, _ = run_nas(["plugins", "list", "--registry", "data-formats", "--json"])
    assert code == 0, out
    rows = json.loads(out)
    assert {r["name"] for r in rows} >= {"folder", "npz", "digits"}
    assert {r["registry"] for r in rows} == {"data-formats"}
    code, _, err = run_nas(["plugins", "list", "-r", "nope"])
    assert code == 2
    assert err.startswith("error: unknown registry 'nope'")
    code, out, _ = run_nas(["plugins", "list", "-r", "spaces"])
    assert code == 0
    assert "ofa_mbv3" in out


@pytest.mark.parametrize("argv", [["spaces", "list"], ["latency", "kinds"], ["devices", "list"],
                                  ["proxies", "list"], ["accuracy", "kinds"],
                                  ["samplers", "list"]],
                         ids=lambda a: " ".join(a))
def test_each_registry_s_own_listing_has_the_contract_s_keys(run_nas: Any,
                                                             argv: list[str]) -> None:
    code, out, _ = run_nas([*argv, "--json"])
    assert code == 0, out
    rows = json.loads(out)
    assert rows
    assert all({"name", "description", "tags"} <= set(r) for r in rows)
    assert all(isinstance(r["tags"], list) and r["description"] for r in rows)


def _registry(label: str) -> Registry[Any]:
    target = dict(REGISTRIES)[label]
    module, _, attr = target.partition(":")
    registry: Registry[Any] = getattr(importlib.import_module(module), attr)
    return registry


#: registries whose own checks run per entry in a suite of their own
#: (``parametrize_with_checks`` in tests/<package>/): here they get the shared contract only,
#: so the suite does not train every accuracy predictor or run every sampler twice
OWN_SUITE = {"accuracy-predictors", "data-formats", "latency-kinds", "proxies", "samplers",
             "spaces"}


@pytest.mark.parametrize("label", registry_labels())
def test_every_plugin_of_every_registry_passes_its_checks(label: str,
                                                         one_torch_thread: None) -> None:
    """Every entry of every registry passes the shared contract (``nas.testing``) and, for a
    registry without a suite of its own, the registry's checks too (``check_plugin``). A
    registry added to ``REGISTRIES`` is checked here at once."""
    registry = _registry(label)
    failures = []
    for name, plugin in registry.items():
        try:
            if label in OWN_SUITE:
                for check in contract_checks():
                    check(plugin)
            else:
                check_plugin(registry, plugin)
        except AssertionError as exc:
            failures.append(f"{name}: {exc}")
    assert registry.names(), f"nothing registered in {label}"
    assert not failures, "\n".join(failures)


def test_the_registries_with_a_suite_of_their_own_exist() -> None:
    assert OWN_SUITE <= set(registry_labels())


@pytest.mark.parametrize(("name", "ok"), [
    ("cpu-1t", True), ("Pixel4", True), ("ofa_mbv3.v2", True), ("a" * 64, True),
    ("a" * 65, False), ("-x", False), (".x", False), ("Bad Name", False), ("", False),
])
def test_the_name_rule_is_the_devices_one(name: str, ok: bool) -> None:
    problem = check_plugin_name(name)
    assert (problem is None) == ok
    if not ok:
        assert problem == f"name {name!r} is not {NAME_RULE}"


def test_a_data_format_of_a_plugin_is_accepted_by_training_configs() -> None:
    from nas.errors import ConfigError
    from nas.train import DATA_FORMATS, DataConfig, DataFormat, FinetuneConfig

    @DATA_FORMATS.register
    class Rows(DataFormat):
        name = "test-rows"
        description = "a format registered by a test"

    try:
        assert DataConfig.from_dict({"source": "x.rows", "format": "test-rows"}).format == \
            "test-rows"
        assert FinetuneConfig(epochs=1, data_format="test-rows").data_format == "test-rows"
    finally:
        DATA_FORMATS.unregister("test-rows")
    with pytest.raises(ConfigError) as info:
        DataConfig.from_dict({"source": "x.rows", "format": "test-rows"}, where="x.yaml")
    assert str(info.value) == ("x.yaml: format = 'test-rows': must be one of auto, "
                               + ", ".join(DATA_FORMATS.names()))


# ---------------------------------------------------------------------- another package
@pytest.mark.slow
def test_a_package_s_plugins_are_listed_with_their_distribution(tmp_path: Path) -> None:
    path = _package(tmp_path / "site", "nas_example_plugin", "nas-example-plugin", GOOD)
    done = _nas(["plugins", "list", "--json"], path, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {(r["registry"], r["name"]): r for r in json.loads(done.stdout)}
    kind = rows["latency-kinds", "params-linear"]
    assert kind["source"] == "nas-example-plugin"
    assert kind["tags"] == ["ofa"]
    assert kind["description"].startswith("least squares on parameters")
    assert rows["devices", "example-board"]["source"] == "nas-example-plugin"
    assert rows["latency-kinds", "flops"]["source"] == "nas"
    # and the rest of nas sees them: the kinds command, the devices command
    kinds = _nas(["latency", "kinds", "--json"], path, tmp_path)
    assert "params-linear" in [r["name"] for r in json.loads(kinds.stdout)]


@pytest.mark.slow
def test_a_package_s_own_tests_run_the_contract_checks(tmp_path: Path) -> None:
    path = _package(tmp_path / "site", "nas_example_plugin", "nas-example-plugin", GOOD)
    done = _pytest("params-linear", path, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout
    assert "failed" not in done.stdout


@pytest.mark.slow
def test_a_kind_that_breaks_the_contract_fails_the_checks_by_name(tmp_path: Path) -> None:
    path = _package(tmp_path / "site", "nas_broken_plugin", "nas-broken-plugin", BROKEN)
    done = _pytest("broken-linear", path, tmp_path)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-2000:]
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAILED")]
    names = " ".join(failed)
    assert "test_kind[broken-linear-check_description]" in names
    assert "test_kind[broken-linear-check_predict_shape_finite_positive]" in names
    assert "test_kind[broken-linear-check_fit_returns_self]" not in names  # the rest holds
    assert "description must be one line" in done.stdout


@pytest.mark.slow
def test_an_entry_point_that_fails_to_import_is_one_warning(tmp_path: Path) -> None:
    path = _package(tmp_path / "site", "nas_boom_plugin", "nas-boom-plugin",
                    "raise RuntimeError('boom at import')\n")
    done = _nas(["plugins", "list", "--json"], path, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if "boom" in line]
    assert lines == ["warning: plug-in entry point 'nas_boom_plugin' (nas-boom-plugin) failed "
                     "to load: RuntimeError: boom at import; skipped"]
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    assert {"flops", "cpu-1t"} <= {r["name"] for r in rows}
