"""The space families: every registered family passes the family contract, and a new family
is one registered class and a YAML file.

Parametrized from the registry (:func:`nas.testing.parametrize_with_checks` over
:data:`nas.space.FAMILIES`): the shared plug-in contract and the family checks
(:mod:`nas.space._checks`), which run the space checks on the family's smallest space. Every
shipped space of every family passes the space checks in ``test_space_contract.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

from nas._plugin import list_plugins
from nas.errors import ConfigError
from nas.space import (
    FAMILIES,
    SPACES,
    FamilySpace,
    GPTSpace,
    GPTSpec,
    ParamsGenome,
    SearchSpace,
    SpaceFamily,
    family_part,
    get_family_space,
    get_space,
    list_spaces,
    load_spec,
    register_space,
)
from nas.testing import check_plugin, parametrize_with_checks, plugin_checks


@parametrize_with_checks(FAMILIES)
def test_family_contract(plugin: Any, check: Any) -> None:
    check(plugin)


def test_the_shipped_families_and_their_spaces() -> None:
    assert {"ofa", "gpt"} <= set(FAMILIES.names())
    families = {name: get_family_space(name).family for name in list_spaces()}
    assert {n for n, f in families.items() if f == "gpt"} == {"gpt2", "gpt_tiny",
                                                               "gpt_shakespeare"}
    assert families["ofa_mbv3"] == families["tiny"] == "ofa"
    assert isinstance(get_space("tiny"), SearchSpace)
    assert isinstance(get_space("gpt2"), GPTSpace)
    rows, _ = list_plugins(["space-families"])
    assert {r["name"] for r in rows} >= {"ofa", "gpt"}
    assert all(r["description"] and r["source"] == "nas" for r in rows)


def test_an_unknown_family_in_a_spec_is_one_line_naming_the_known_ones(tmp_path: Path) -> None:
    raw = yaml.safe_load((Path(__file__).parents[2] / "search_spaces/gpt_tiny.yaml")
                         .read_text())
    raw["family"] = "vit"
    path = tmp_path / "vit.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as info:
        load_spec(path)
    assert str(info.value) == f"{path}: family = 'vit': Input should be 'ofa' or 'gpt'"


# ---------------------------------------------------------------------- a third family
class WideSpec(GPTSpec):
    family: Literal["wide"]  # type: ignore[assignment]


class WideSpace(GPTSpace):
    """GPT's format under another family's name: the smallest third family to write."""


class WideFamily(SpaceFamily):
    name = "wide"
    description = "a third family for the test: one class and a YAML file"
    Spec = WideSpec
    Space = WideSpace
    supernet = "nas.supernet:NoSuchSupernet"
    export_signature = "tokens -> logits"
    latency_features = "MACs"


@pytest.fixture
def third_family(tmp_path: Path) -> Iterator[Path]:
    FAMILIES.register(WideFamily)
    path = tmp_path / "wide_for_test.yaml"
    path.write_text(yaml.safe_dump({
        "name": "wide_for_test", "description": "a space of the third family", "family": "wide",
        "vocab_size": 10, "n_ctx": 8, "head_dim": 4, "n_layer": [1, 2], "n_embd": [8, 16],
        "n_head": [1, 2], "mlp": [8, 16]}))
    try:
        yield path
    finally:
        if "wide_for_test" in SPACES:
            SPACES.unregister("wide_for_test")
        FAMILIES.unregister("wide")


def test_a_third_family_is_one_registered_class_and_a_yaml_file(third_family: Path) -> None:
    space = register_space(third_family)
    assert isinstance(space, WideSpace)
    assert get_space("wide_for_test") is space
    assert space.tags == frozenset({"wide"})
    check_plugin(FAMILIES, "wide")  # the family contract, its space's checks included
    check_plugin(SPACES, "wide_for_test")


def test_a_family_whose_mutations_leave_the_space_fails_the_contract(
        third_family: Path) -> None:
    def mutate(self: WideSpace, arch: Any, seed: Any = None, prob: float = 0.1) -> Any:
        return self.largest()  # ignores its parent: mutate(prob=0) changes it

    register_space(third_family)
    WideSpace.mutate = mutate  # type: ignore[method-assign]
    try:
        failed = []
        for check in plugin_checks(FAMILIES, WideFamily):
            try:
                check(WideFamily)
            except AssertionError as exc:
                failed.append((check.__name__, str(exc)))
    finally:
        del WideSpace.mutate
    assert [name for name, _ in failed] == ["check_family_spaces_pass_the_space_checks"]
    assert "mutate(prob=0) changed" in failed[0][1]


def test_a_third_family_needs_no_batch_form_or_genome_of_its_own(third_family: Path) -> None:
    """The batch form and the genome have defaults built on the family's search parameters
    (:class:`~nas.space.ParamsGenome`): a family that writes neither passes the contract."""
    register_space(third_family)
    own = {k: getattr(WideSpace, k) for k in ("to_arrays", "from_arrays", "genome")}
    try:
        for key in own:
            setattr(WideSpace, key, getattr(FamilySpace, key))
        space = get_space("wide_for_test")
        assert isinstance(space.genome(), ParamsGenome)
        assert space.to_arrays([space.largest()]) == [space.largest()]
        check_plugin(FAMILIES, "wide")
    finally:
        for key, value in own.items():
            setattr(WideSpace, key, value)


def test_a_family_whose_params_lose_a_layer_fails_the_contract(third_family: Path) -> None:
    def from_params(self: WideSpace, params: Any) -> Any:
        arch = GPTSpace.from_params(self, params)
        n = max(1, arch.n_layer - 1)  # drops a layer: to_params does not round-trip
        return self.arch(n, arch.n_embd, arch.n_head[:n], arch.mlp[:n])

    register_space(third_family)
    WideSpace.from_params = from_params  # type: ignore[method-assign]
    try:
        with pytest.raises(AssertionError, match=r"from_params\(to_params\("):
            check_plugin(FAMILIES, "wide")
    finally:
        del WideSpace.from_params


def test_the_layers_above_reach_a_supernet_through_its_family(tmp_path: Path,
                                                              third_family: Path) -> None:
    """Search, proxies and the CLI read a checkpoint with the reader its family names: each
    shipped family reads and loads its own and refuses the other's; a family that names no
    loader says so in one line."""
    from nas.errors import CheckpointError
    from nas.supernet import GPTSupernet, OFASupernet, save_gpt_supernet, save_supernet

    gpt_ck = save_gpt_supernet(GPTSupernet.from_space(get_space("gpt_tiny")),
                               tmp_path / "gpt.safetensors")
    ofa_ck = tmp_path / "ofa.safetensors"
    save_supernet(OFASupernet("tiny"), ofa_ck)
    for space, ck, other in ((get_space("gpt_tiny"), gpt_ck, ofa_ck),
                             (get_space("tiny"), ofa_ck, gpt_ck)):
        assert family_part(space, "checkpoint_meta")(ck)["space"] == space.name
        net = family_part(space, "load_supernet")(ck, space=space)
        assert isinstance(net, family_part(space, "supernet"))
        with pytest.raises(CheckpointError):
            family_part(space, "checkpoint_meta")(other)
    with pytest.raises(CheckpointError,
                       match="is for space 'gpt_tiny', not 'gpt_shakespeare'; pass --space"):
        family_part(get_space("gpt_shakespeare"), "load_supernet")(gpt_ck,
                                                                   space="gpt_shakespeare")
    wide = register_space(third_family)
    with pytest.raises(ConfigError, match=r"^space family 'wide' names no load_supernet \("):
        family_part(wide, "load_supernet")
