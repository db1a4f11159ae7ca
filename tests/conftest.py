"""Fixtures shared by the whole test suite. Keep them small and generic."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, settings
from torch import nn

# Property-based fuzzing: bounded in `make test` (the default profile, 20 examples a property),
# longer in `make fuzz`
# (`--hypothesis-profile=nightly`). No deadline: this shared 2-core VM's speed wanders.
settings.register_profile(
    "default", max_examples=20, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "nightly", max_examples=1000, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("default")

# `make test` runs the suite on two pytest-xdist workers (`-n 2 --dist loadscope`), scheduled
# by `_UnitScheduling`: a work unit is a module (its fixtures, a started service or a fitted
# database, are built once, and its tests never run beside each other), except that every
# module that starts Ray (the service's, the cluster's, and those marked `ray` or `cluster`) is
# in one unit, "ray": two Ray instances starting at once on two cores time out each other's
# actors (Serve's proxy, the job agent). The Ray unit goes first, as the longest; the other
# worker runs the rest meanwhile. (xdist's `--dist loadgroup` does not group under pytest 9.2,
# which ignores its renamed ids.)
_RAY_FOLDERS = ("tests/serve/", "tests/cluster/")
_RAY_MARK = re.compile(r"\bmark\.(ray|cluster)\b")
_ROOT = Path(__file__).resolve().parent.parent


@functools.cache
def _unit(module: str) -> str:
    """The work unit of a test module (its path from the repository root)."""
    if module.startswith(_RAY_FOLDERS):
        return "ray"
    try:
        text = (_ROOT / module).read_text(encoding="utf-8")
    except OSError:
        return module
    return "ray" if _RAY_MARK.search(text) else module


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: the suite also runs without it
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadscope`` with this suite's work units (see above)."""
    if config.getoption("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class _UnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _unit(nodeid.split("::", 1)[0])

    config.option.loadscopereorder = False  # the workers' order: slow units first
    return _UnitScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In an xdist worker, the Ray unit first (a stable sort)."""
    if not hasattr(config, "workerinput"):
        return
    items.sort(key=lambda i: _unit(i.nodeid.split("::", 1)[0]) != "ray")


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Run torch on one thread: the tiny models of the tests are faster so on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _liven(net: nn.Module, x: torch.Tensor, seed: int = 0) -> None:
    """Give a randomly initialised supernet's active subnet eval-mode outputs of order 1.

    A fresh supernet's eval outputs are tiny (BatchNorm statistics at their defaults), so a
    comparison of them within 1e-5 would prove nothing. This perturbs OFA's kernel-transform
    matrices (``transform_*``, the identity at init), draws random BatchNorm affine parameters,
    conv/linear biases and a unit-gain classifier, sets every BatchNorm's running statistics
    from ``x`` through the active subnet, and then adds noise to those statistics.
    """
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen)

    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    was_training = net.training
    with torch.no_grad():
        for name, p in net.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf.startswith("transform_"):
                p.add_(0.1 * randn(*p.shape))
            elif leaf == "bias" and p.ndim == 1:
                p.copy_(0.1 * randn(*p.shape))
        for bn in bns:
            n = bn.num_features
            bn.weight.copy_(0.5 + torch.rand(n, generator=gen))
            bn.bias.copy_(0.2 * randn(n))
            bn.reset_running_stats()
            bn.momentum = None  # first batch sets the statistics
        classifier = getattr(net, "classifier", None)
        if classifier is not None:
            w = classifier.weight
            w.copy_(randn(*w.shape) * 3 / w.shape[1] ** 0.5)
        net.train()
        net(x)
        net.train(was_training)
        for bn in bns:
            n = bn.num_features
            bn.momentum = 0.1
            bn.running_mean.add_(0.1 * randn(n))
            bn.running_var.mul_(0.8 + 0.4 * torch.rand(n, generator=gen))


@pytest.fixture
def liven() -> Callable[..., None]:
    """``liven(net, x, seed=0)``: make ``net``'s active subnet give outputs of order 1 on ``x``.

    Use inputs with per-sample offsets (``torch.randn(b, 3, r, r) + 2 * torch.randn(b, 3, 1,
    1)``) so that the outputs also vary across the batch, and evaluate on the same ``x``.
    """
    return _liven


def _lively_input(batch: int, r: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, r, r, generator=gen) + 2 * torch.randn(
        batch, 3, 1, 1, generator=gen
    )


@pytest.fixture
def make_input() -> Callable[..., torch.Tensor]:
    """``make_input(batch, r, seed=0)``: a seeded image batch whose samples differ in offset."""
    return _lively_input


@pytest.fixture
def run_nas(capsys: pytest.CaptureFixture[str]) -> Callable[[list[str]], tuple[int, str, str]]:
    """Run the real ``nas`` entry point in-process: ``(exit code, stdout, stderr)``.

    ``nas.cli.main`` turns a NASError into one ``error: ...`` line and exit status 2, so the
    tests see exactly what a user sees.
    """
    from nas.cli import main

    def run(argv: list[str]) -> tuple[int, str, str]:
        try:
            main(list(argv))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return run
