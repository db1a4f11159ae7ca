"""What every registered search space must do, run against each of them.

Parametrized from the registry by :func:`nas.testing.parametrize_with_checks`, as a plug-in
package would: the shared plug-in contract (name, description, Options, tags) and the spaces'
own checks (:mod:`nas.space._checks`). A new space (one YAML file in ``search_spaces/``) is
tested by adding it. Building its supernet needs torch, which ``nas.space`` never imports:
that check is here.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import yaml

from nas._plugin import NoOptions
from nas.errors import ConfigError
from nas.space import SPACES, SearchSpace, get_space, list_spaces, load_spec, register_space
from nas.supernet import OFASupernet
from nas.testing import check_plugin, parametrize_with_checks, plugin_checks

NAMES = list_spaces()
#: the spaces OFASupernet builds: the ``ofa`` family's (the ``gpt`` family's supernet is
#: tested in ``tests/supernet``)
OFA_NAMES = [n for n in NAMES if get_space(n).family == "ofa"]


@pytest.fixture(params=OFA_NAMES)
def space(request: pytest.FixtureRequest) -> SearchSpace:
    return get_space(request.param)


def test_there_are_spaces_to_test() -> None:
    assert "tiny" in NAMES


@parametrize_with_checks(SPACES)
def test_space_contract(plugin: Any, check: Any) -> None:
    check(plugin)


def test_supernet_builds_and_extracts_the_smallest_subnet(space: SearchSpace) -> None:
    torch.manual_seed(0)
    net = OFASupernet(space)
    arch = space.smallest()  # the smallest resolution keeps this fast for the big spaces
    sub = net.extract(arch).eval()
    assert sum(p.numel() for p in sub.parameters()) == space.params(arch)
    with torch.no_grad():
        y = sub(torch.zeros(1, 3, arch.r, arch.r))
    assert y.shape == (1, space.spec.num_classes)


def test_a_space_answers_the_contract_from_its_spec(tmp_path: Any) -> None:
    tiny = get_space("tiny")
    assert (tiny.Options, tiny.tags, tiny.family) == (NoOptions, frozenset({"ofa"}), "ofa")
    assert tiny.description == tiny.spec.description
    raw = yaml.safe_load(yaml.safe_dump(tiny.spec.model_dump(by_alias=True, mode="json")))
    raw.pop("description")
    raw["name"] = "test-undescribed"
    raw["resolution"] = raw.pop("resolutions")
    path = tmp_path / "undescribed.yaml"
    path.write_text(yaml.safe_dump(raw))
    sp = register_space(path)
    try:
        assert sp.description == ("ofa space: 2 stages, kernels [3, 5], expand [2, 4], "
                                  "depths [1, 2], 16-24 px, 10 classes")
        check_plugin(SPACES, "test-undescribed")
    finally:
        SPACES.unregister("test-undescribed")
    raw["description"] = "two\nlines"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="description = 'two\\\\nlines': must be one line"):
        load_spec(path)
    raw["description"], raw["family"] = "x", "vit"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="family = 'vit': Input should be 'ofa'"):
        load_spec(path)


def test_a_space_that_breaks_its_checks_fails_them() -> None:
    class Unstable(SearchSpace):
        def sample(self, seed: Any = None) -> Any:  # ignores its seed
            return super().sample(None)

    bad = Unstable(get_space("tiny").spec)
    failed = []
    for check in plugin_checks(SPACES, bad):
        try:
            check(bad)
        except AssertionError:
            failed.append(check.__name__)
    # another object than the registered "tiny"; and sample(seed=5) does not repeat
    assert failed == ["check_registered", "check_hash_is_stable_and_tells_archs_apart"]
