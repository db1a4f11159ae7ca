"""The search-space registry and the structure of the shipped spaces."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from nas.errors import ArchitectureError, ConfigError, NASError, UnknownNameError
from nas.space import SearchSpace, _registry, get_space, list_spaces, load_spec, make_divisible

SHIPPED = ("ofa_mbv3", "ofa_mbv3_w12", "ofa_proxyless", "cifar_mbv3", "tiny")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def private_registry() -> Iterator[None]:
    """Let a test register spaces without leaking them into the rest of the session."""
    before = set(list_spaces())  # load the shipped spaces first
    yield
    for name in set(list_spaces()) - before:
        _registry.SPACES.unregister(name)


# ---------------------------------------------------------------------------- registry
def test_list_spaces_has_the_shipped_spaces() -> None:
    names = list_spaces()
    assert set(SHIPPED) <= set(names)
    assert names == sorted(names)


def test_list_spaces_filters_by_pattern() -> None:
    assert list_spaces("ofa_*") == ["ofa_mbv3", "ofa_mbv3_w12", "ofa_proxyless"]
    assert list_spaces("no_such_*") == []


def test_every_yaml_file_is_a_registered_space() -> None:
    for path in (REPO / "search_spaces").glob("*.yaml"):
        name = yaml.safe_load(path.read_text())["name"]
        assert get_space(name).spec == load_spec(path)


def test_get_space_returns_the_same_object_and_passes_spaces_through() -> None:
    space = get_space("tiny")
    assert isinstance(space, SearchSpace)
    assert get_space("tiny") is space
    assert get_space(space) is space
    assert space.name == "tiny"


def test_unknown_space_lists_the_known_ones() -> None:
    with pytest.raises(UnknownNameError) as info:
        get_space("ofa_mbv4")
    msg = str(info.value)
    assert "ofa_mbv4" in msg
    for name in SHIPPED:
        assert name in msg
    # a KeyError for dict-like callers, a NASError for the CLI
    assert isinstance(info.value, KeyError)
    assert isinstance(info.value, NASError)
    assert not msg.startswith("'")  # KeyError would quote the message


def test_registering_a_duplicate_name_is_an_error(private_registry: None) -> None:
    before = get_space("tiny")
    with pytest.raises(ConfigError, match="tiny"):
        _registry.register_space(before.spec)
    assert get_space("tiny") is before


def test_register_a_new_space_from_yaml(private_registry: None, tmp_path: Path) -> None:
    raw = yaml.safe_load((REPO / "search_spaces" / "tiny.yaml").read_text())
    raw["name"] = "tiny_copy_for_test"
    raw["kernel_sizes"] = [3]
    path = tmp_path / "tiny_copy.yaml"
    path.write_text(yaml.safe_dump(raw))
    space = _registry.register_space(path)
    assert get_space("tiny_copy_for_test") is space
    assert "tiny_copy_for_test" in list_spaces("tiny*")
    assert space.kernel_sizes == (3,)
    with pytest.raises(ConfigError):
        _registry.register_space(path)


def test_register_a_spec_object(private_registry: None) -> None:
    spec = get_space("tiny").spec.model_copy(update={"name": "tiny_spec_for_test"})
    space = _registry.register_space(spec)
    assert get_space("tiny_spec_for_test") is space
    assert space.size() == get_space("tiny").size()


def test_private_registry_does_not_leak() -> None:
    # runs after the registering tests in file order
    assert not list_spaces("*_for_test")


# ---------------------------------------------------------------------------- spec files
def _write(tmp_path: Path, raw: object) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _tiny_raw() -> dict:
    return yaml.safe_load((REPO / "search_spaces" / "tiny.yaml").read_text())


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda raw: raw.pop("stages"), ["stages"]),
        (lambda raw: raw.update(kernel_sizes=[3, 4]), ["kernel_sizes", "4"]),
        (lambda raw: raw.update(expand_ratios=[]), ["expand_ratios"]),
        (lambda raw: raw.update(depths=[1, "two"]), ["depths", "two"]),
        (lambda raw: raw["stem"].update(act="gelu"), ["act", "gelu", "relu", "h_swish"]),
        (lambda raw: raw.update(resolution={"min": 32, "max": 16, "step": 4}), ["resolution"]),
        (lambda raw: raw["stages"][0].update(depth=1), ["stages", "only the last stage"]),
        (lambda raw: raw["stages"][1].update(depth=3), ["stages", "depth 3", "max(depths) = 2"]),
        (lambda raw: raw["head"].update(feature_mix_before_pool=True),
         ["head", "final_expand must be absent"]),
        (lambda raw: raw["head"].pop("final_expand"), ["head", "final_expand is required"]),
        (lambda raw: raw.update(bn_eps=0), ["bn_eps", "greater than 0"]),
    ],
    ids=["missing-stages", "even-kernel", "empty-expand", "non-int-depth", "bad-act",
         "empty-range", "fixed-depth-not-last", "fixed-depth-too-deep", "head-both",
         "head-neither", "bn-eps"],
)
def test_bad_spec_files_raise_config_error(tmp_path: Path, change, words: list[str]) -> None:
    raw = _tiny_raw()
    change(raw)
    with pytest.raises(ConfigError) as info:
        load_spec(_write(tmp_path, raw))
    for word in words:
        assert word in str(info.value)


def test_unreadable_spec_files_raise_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_spec(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_spec(bad)


# ---------------------------------------------------------------------------- sizes
def test_ofa_mbv3_size_is_the_papers() -> None:
    # Cai et al. 2020: ((3*3)^2 + (3*3)^3 + (3*3)^4)^5 = 7371^5, about 2e19 networks
    space = get_space("ofa_mbv3")
    assert 9**2 + 9**3 + 9**4 == 7371
    assert space.size() == 7371**5
    assert round(space.size() / 1e19, 2) == 2.18
    assert space.size(with_resolution=True) == 7371**5 * 25


def _all_archs(space: SearchSpace) -> set:
    """Every architecture of a small space, by brute force over all raw gene values."""
    n, m = space.n_layers, space.n_stages
    archs = set()
    for ks in itertools.product(space.kernel_sizes, repeat=n):
        for e in itertools.product(space.expand_ratios, repeat=n):
            for d in itertools.product(space.depths, repeat=m):
                for r in space.resolutions:
                    archs.add(space.arch(ks, e, d, r))
    return archs


def test_tiny_size_matches_brute_force_count() -> None:
    space = get_space("tiny")
    archs = _all_archs(space)
    assert len(archs) == space.size(with_resolution=True)
    assert len({(a.ks, a.e, a.d) for a in archs}) == space.size()


# ---------------------------------------------------------------------------- structure
def test_ofa_mbv3_structure_is_the_papers() -> None:
    space = get_space("ofa_mbv3")
    spec = space.spec
    assert [st.channels for st in spec.stages] == [24, 40, 80, 112, 160]
    assert [st.stride for st in spec.stages] == [2, 2, 2, 1, 2]
    assert [st.se for st in spec.stages] == [False, True, False, True, True]
    assert [st.act for st in spec.stages] == ["relu", "relu", "h_swish", "h_swish", "h_swish"]
    assert space.resolutions == tuple(range(128, 225, 4))
    assert len(space.resolutions) == 25
    assert space.kernel_sizes == (3, 5, 7)
    assert space.expand_ratios == (3, 4, 6)
    assert space.depths == (2, 3, 4)
    assert (space.n_stages, space.max_depth, space.n_layers) == (5, 4, 20)
    assert (spec.stem.channels, spec.stem.stride, spec.stem.act) == (16, 2, "h_swish")
    assert (spec.first_block.channels, spec.first_block.stride) == (16, 1)
    assert (spec.head.final_expand, spec.head.feature_mix) == (960, 1280)
    assert spec.num_classes == 1000
    assert spec.preprocessing.mean == (0.485, 0.456, 0.406)
    assert spec.preprocessing.std == (0.229, 0.224, 0.225)


def test_ofa_mbv3_w12_widths_are_ofa_scaled_by_1_2() -> None:
    base, wide = get_space("ofa_mbv3").spec, get_space("ofa_mbv3_w12").spec

    def scaled(c: int) -> int:
        return make_divisible(c * 1.2, 8)

    assert [st.channels for st in wide.stages] == [scaled(st.channels) for st in base.stages]
    assert wide.stem.channels == scaled(base.stem.channels) == 24
    assert wide.first_block.channels == scaled(base.first_block.channels)
    assert wide.head.final_expand == scaled(base.head.final_expand) == 1152
    assert wide.head.feature_mix == scaled(base.head.feature_mix) == 1536
    assert [st.stride for st in wide.stages] == [st.stride for st in base.stages]
    assert [st.se for st in wide.stages] == [st.se for st in base.stages]
    assert wide.resolutions == base.resolutions


def test_ofa_proxyless_is_ofas_proxylessnas_space_at_width_1_3() -> None:
    """OFAProxylessNASNets(width_mult=1.3, ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6],
    depth_list=[2, 3, 4]); tests/supernet/test_extract.py compares the network itself."""
    space = get_space("ofa_proxyless")
    spec = space.spec

    def scaled(c: int) -> int:
        return make_divisible(c * 1.3, 8)

    assert [st.channels for st in spec.stages] == [scaled(c) for c in (24, 40, 80, 96, 192, 320)]
    assert [st.channels for st in spec.stages] == [32, 56, 104, 128, 248, 416]
    assert [st.stride for st in spec.stages] == [2, 2, 2, 1, 2, 1]
    assert [st.depth for st in spec.stages] == [None] * 5 + [1]
    assert {st.act for st in spec.stages} == {"relu6"}
    assert not any(st.se for st in spec.stages)
    assert (spec.stem.channels, spec.stem.stride, spec.stem.act) == (scaled(32), 2, "relu6")
    assert (spec.first_block.channels, spec.first_block.act) == (scaled(16), "relu6")
    assert spec.head.final_expand is None
    assert spec.head.feature_mix_before_pool
    assert (spec.head.feature_mix, spec.head.act) == (scaled(1280), "relu6") == (1664, "relu6")
    assert spec.bn_eps == 1e-3
    assert spec.num_classes == 1000
    assert space.resolutions == get_space("ofa_mbv3").resolutions
    assert (space.n_stages, space.max_depth, space.fixed_depth, space.n_layers) == (5, 4, 1, 21)
    # five elastic stages as in OFA's MobileNetV3 space, times 9 settings of the last block
    assert space.size() == 7371**5 * 9


def test_a_fixed_depth_stage_is_no_depth_gene() -> None:
    space = get_space("ofa_proxyless")
    a = space.sample(seed=0)
    assert len(a.ks) == len(a.e) == 21
    assert len(a.d) == 5
    assert len(a.to_dict()["d"]) == 5
    assert space.stage_depths(a) == (*a.d, 1)
    assert a.active_layers()[-1] == (5, 0, a.ks[20], a.e[20])
    assert len(a.active_layers()) == sum(a.d) + 1
    # OFA's form: a depth for every stage, the last 1 (its set_active_subnet clamps it)
    assert space.parse({**a.to_dict(), "d": [*a.d, 1]}) == a
    for d, words in (([*a.d, 2], "d[5] must be 1, got 2 (stage 6 has a fixed depth"),
                     (list(a.d)[:4], "d must have 5 entries (one per stage of elastic depth"),
                     ([*a.d, 1, 1], "d must have 5 entries")):
        with pytest.raises(ArchitectureError) as info:
            space.parse({**a.to_dict(), "d": d})
        assert words in str(info.value)
    # the last slot always runs: its kernel is checked, and it takes part in the encodings
    with pytest.raises(ArchitectureError, match=r"ks\[20\] \(stage 6, layer 1\)"):
        space.parse({**a.to_dict(), "ks": [*a.ks[:20], 4]})
    b = space.parse({**a.to_dict(), "ks": [*a.ks[:20], 10 - a.ks[20]]})
    assert b != a
    assert b.hash != a.hash
    onehot = space.encode([a, b])
    assert onehot.shape == (2, 21 * 6 + 25)
    assert not (onehot[0] == onehot[1]).all()
    assert space.to_arrays([a]).ks[0, 20] == a.ks[20]
    assert len({space.mutate(a, seed=i, prob=1.0).ks[20] for i in range(20)}) > 1


@pytest.mark.parametrize(
    ("v", "expected"),
    [(16 * 1.2, 24), (8, 8), (3, 8), (134.4, 136), (16 * 6, 96), (24 * 4.5, 112), (12, 16)],
)
def test_make_divisible_follows_the_mobilenet_rule(v: float, expected: int) -> None:
    assert make_divisible(v, 8) == expected
    assert make_divisible(v, 8) % 8 == 0
    assert make_divisible(v, 8) >= 0.9 * v


def test_hidden_widths_of_ofa_mbv3() -> None:
    # MobileNetV3's familiar hidden widths: 16*{3,4,6}, 24*{3,4,6}, 40*3, 80*6, 112*6, 160*6
    space = get_space("ofa_mbv3")
    assert [space.mid_channels(16, e) for e in (3, 4, 6)] == [48, 64, 96]
    assert [space.mid_channels(24, e) for e in (3, 4, 6)] == [72, 96, 144]
    assert space.mid_channels(40, 3) == 120
    assert space.mid_channels(80, 6) == 480
    assert space.mid_channels(112, 6) == 672
    assert space.mid_channels(160, 6) == 960
    # squeeze-excite at a quarter of the hidden width
    assert space.se_channels(120) == 32
    assert space.se_channels(672) == 168


def test_layer_plan_chains_the_stages() -> None:
    for name in SHIPPED:
        space = get_space(name)
        plan = space.layer_plan
        assert len(plan) == space.n_layers
        cin = space.spec.first_block.channels
        for j, (s, i, c_in, c_out, stride, se) in enumerate(plan):
            st = space.spec.stages[s]
            assert (s, i) == divmod(j, space.max_depth)
            assert c_in == (cin if i == 0 else st.channels)
            assert c_out == st.channels
            assert stride == (st.stride if i == 0 else 1)
            assert se == st.se
            if i == space.max_depth - 1:
                cin = st.channels
