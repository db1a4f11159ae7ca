"""Architectures: parsing, validation, canonical form, hashing, sampling, evolution, encodings."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from published import OFA_SUBNET

from nas.errors import ArchitectureError, NASError
from nas.space import Architecture, get_space


@pytest.fixture(scope="module")
def ofa():
    return get_space("ofa_mbv3")


@pytest.fixture(scope="module")
def tiny():
    return get_space("tiny")


def _active(arch: Architecture, md: int) -> list[int]:
    return [s * md + i for s, depth in enumerate(arch.d) for i in range(depth)]


# ---------------------------------------------------------------------------- parsing
def test_parse_the_published_ofa_subnet(ofa) -> None:
    arch = ofa.parse(OFA_SUBNET)
    assert isinstance(arch, Architecture)
    assert arch.space == "ofa_mbv3"
    assert arch.d == (2, 2, 2, 3, 3)
    assert arch.r == 224
    active = _active(arch, 4)
    assert len(active) == sum(OFA_SUBNET["d"]) == 12
    for j in active:
        assert arch.ks[j] == OFA_SUBNET["ks"][j]
        assert arch.e[j] == OFA_SUBNET["e"][j]
    assert [(k, e) for _s, _i, k, e in arch.active_layers()] == [
        (OFA_SUBNET["ks"][j], OFA_SUBNET["e"][j]) for j in active
    ]


def test_parse_accepts_ofas_wid_key_and_every_input_form(ofa, tmp_path: Path) -> None:
    arch = ofa.parse(OFA_SUBNET)
    assert ofa.parse({**OFA_SUBNET, "wid": None}) == arch
    text = json.dumps(OFA_SUBNET)
    assert ofa.parse(text) == arch
    assert ofa.parse(f"  {text}\n") == arch
    path = tmp_path / "arch.json"
    path.write_text(text)
    assert ofa.parse(path) == arch
    assert ofa.parse(f"@{path}") == arch
    assert ofa.parse(arch) == arch
    assert ofa.arch(**OFA_SUBNET) == arch


def test_canonical_form_ignores_layers_that_do_not_run(ofa) -> None:
    arch = ofa.parse(OFA_SUBNET)
    other = dict(OFA_SUBNET, ks=list(OFA_SUBNET["ks"]), e=list(OFA_SUBNET["e"]))
    # stage 1 has depth 2: slots 2 and 3 do not run; stage 4 has depth 3: slot 15 does not
    for j in (2, 3, 15):
        other["ks"][j] = 7 if other["ks"][j] != 7 else 5
        other["e"][j] = 6 if other["e"][j] != 6 else 4
    twin = ofa.parse(other)
    assert twin == arch
    assert hash(twin) == hash(arch)
    assert twin.hash == arch.hash
    assert twin.to_json() == arch.to_json()
    assert np.array_equal(ofa.encode([twin]), ofa.encode([arch]))
    assert np.array_equal(ofa.encode([twin], "ordinal"), ofa.encode([arch], "ordinal"))
    assert len({arch, twin}) == 1
    # ... while a change at a layer that runs is a different architecture
    other["ks"][0] = 5
    changed = ofa.parse(other)
    assert changed != arch
    assert changed.hash != arch.hash
    assert not np.array_equal(ofa.encode([changed]), ofa.encode([arch]))


def test_json_round_trip(ofa) -> None:
    for arch in [ofa.parse(OFA_SUBNET), ofa.largest(), ofa.smallest(), ofa.sample(seed=5)]:
        assert ofa.parse(arch.to_json()) == arch
        assert json.loads(arch.to_json()) == arch.to_dict()
        assert ofa.parse(arch.to_dict()) == arch
        assert set(arch.to_dict()) == {"ks", "e", "d", "r"}


def test_hash_is_stable_across_processes(ofa) -> None:
    arch = ofa.parse(OFA_SUBNET)
    code = (
        "import json, sys; from nas.space import get_space; "
        "print(get_space('ofa_mbv3').parse(json.loads(sys.argv[1])).hash)"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(OFA_SUBNET)],
        capture_output=True, text=True, check=True, env=env, timeout=120,
    )
    assert out.stdout.strip() == arch.hash
    assert len(arch.hash) == 16
    int(arch.hash, 16)  # hex digits
    assert str(arch) == f"ofa_mbv3:{arch.hash}"


def test_hash_differs_across_spaces_and_archs(ofa) -> None:
    wide = get_space("ofa_mbv3_w12")
    a, b = ofa.parse(OFA_SUBNET), wide.parse(OFA_SUBNET)
    assert a.to_dict() == b.to_dict()
    assert a != b
    assert a.hash != b.hash
    hashes = {x.hash for x in ofa.sample_many(200, seed=0)}
    assert len(hashes) == 200


def test_architecture_is_frozen_and_hashable(ofa) -> None:
    arch = ofa.parse(OFA_SUBNET)
    with pytest.raises(dataclasses.FrozenInstanceError):
        arch.r = 128  # type: ignore[misc]
    assert isinstance(arch.ks, tuple)
    assert isinstance(arch.d, tuple)
    again = ofa.parse(json.dumps(OFA_SUBNET))
    assert again is not arch
    assert {arch: 1}[again] == 1
    assert len({arch, again, ofa.largest()}) == 2


# ---------------------------------------------------------------------------- validation
def _with(key: str, index: int | None, value):
    raw = json.loads(json.dumps(OFA_SUBNET))
    if index is None:
        raw[key] = value
    else:
        raw[key][index] = value
    return raw


def _without(key: str):
    raw = dict(OFA_SUBNET)
    del raw[key]
    return raw


BAD = [
    ("kernel-4", _with("ks", 0, 4), ["ks[0]", "4", "[3, 5, 7]"]),
    ("expand-5", _with("e", 4, 5), ["e[4]", "5", "[3, 4, 6]"]),
    ("ks-short", _with("ks", None, [3] * 19), ["ks", "19", "20"]),
    ("e-long", _with("e", None, [3] * 21), ["e", "21", "20"]),
    ("d-short", _with("d", None, [2] * 4), ["d", "4", "5"]),
    ("r-130", _with("r", None, 130), ["r", "130", "128", "224", "4"]),
    ("r-text", _with("r", None, "224"), ["r", "'224'"]),
    ("depth-5", _with("d", 2, 5), ["d[2]", "5", "[2, 3, 4]"]),
    ("ks-not-int", _with("ks", 1, 3.0), ["ks[1]", "3.0", "int"]),
    ("d-bool", _with("d", 0, True), ["d[0]", "True", "int"]),
    ("missing-r", _without("r"), ["missing", "'r'"]),
    ("missing-ks", _without("ks"), ["missing", "'ks'"]),
    ("unknown-key", {**OFA_SUBNET, "width": 1.2}, ["unknown", "width", "ks, e, d, r"]),
    ("bad-json", '{"ks": [3, 3], "e": ', ["not valid JSON", "ks", "r"]),
    ("not-object", "[3, 5, 7]", ["JSON object", "list"]),
    ("missing-file", "@missing-file.json", ["not found", "missing-file.json"]),
]


@pytest.mark.parametrize(("raw", "words"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_invalid_architectures_are_explained(ofa, raw, words: list[str]) -> None:
    with pytest.raises(ArchitectureError) as info:
        ofa.parse(raw)
    msg = str(info.value)
    for word in words:
        assert word in msg, f"{word!r} not in {msg!r}"
    assert isinstance(info.value, NASError)
    assert isinstance(info.value, ValueError)


def test_invalid_json_file_is_explained(ofa, tmp_path: Path) -> None:
    path = tmp_path / "arch.json"
    path.write_text('{"ks": ')
    with pytest.raises(ArchitectureError, match="not valid JSON") as info:
        ofa.parse(f"@{path}")
    assert str(path) in str(info.value)


def test_architecture_of_another_space_is_rejected(ofa, tiny) -> None:
    wide = get_space("ofa_mbv3_w12").parse(OFA_SUBNET)
    with pytest.raises(ArchitectureError) as info:
        ofa.parse(wide)
    assert "ofa_mbv3_w12" in str(info.value)
    assert "'ofa_mbv3'" in str(info.value)
    with pytest.raises(ArchitectureError, match="ofa_mbv3"):
        tiny.parse(ofa.largest())
    with pytest.raises(ArchitectureError):
        ofa.parse({**OFA_SUBNET, "space": "tiny"})
    assert ofa.parse({**OFA_SUBNET, "space": "ofa_mbv3"}) == ofa.parse(OFA_SUBNET)
    with pytest.raises(ArchitectureError, match="belongs to space 'tiny'"):
        ofa.to_arrays([ofa.largest(), tiny.largest()])
    with pytest.raises(ArchitectureError):
        ofa.costs([tiny.smallest()])
    with pytest.raises(ArchitectureError):
        ofa.mutate(tiny.smallest(), seed=0)


def test_numpy_integers_are_accepted(ofa) -> None:
    raw = {k: (np.asarray(v) if k != "r" else np.int64(v)) for k, v in OFA_SUBNET.items()}
    raw = {k: (list(v) if isinstance(v, np.ndarray) else v) for k, v in raw.items()}
    arch = ofa.parse(raw)
    assert arch == ofa.parse(OFA_SUBNET)
    assert type(arch.r) is int
    assert all(type(k) is int for k in arch.ks)


# ---------------------------------------------------------------------------- sampling
def test_seeded_sampling_is_reproducible(ofa) -> None:
    assert ofa.sample(seed=7) == ofa.sample(seed=7)
    assert ofa.sample_many(20, seed=3) == ofa.sample_many(20, seed=3)
    assert ofa.sample_many(20, seed=3) != ofa.sample_many(20, seed=4)
    rng_a, rng_b = np.random.default_rng(11), np.random.default_rng(11)
    assert [ofa.sample(rng_a) for _ in range(5)] == [ofa.sample(rng_b) for _ in range(5)]
    assert len(set(ofa.sample(np.random.default_rng(11)) for _ in range(3))) == 1


def test_sampling_covers_every_choice_about_uniformly(ofa) -> None:
    archs = ofa.sample_many(600, seed=0)
    assert all(ofa.parse(a) == a for a in archs[:50])  # canonical and valid
    ks, es, ds = Counter(), Counter(), Counter()
    for a in archs:
        for j in _active(a, ofa.max_depth):
            ks[a.ks[j]] += 1
            es[a.e[j]] += 1
        ds.update(a.d)
    rs = Counter(a.r for a in archs)
    assert set(ks) == set(ofa.kernel_sizes)
    assert set(es) == set(ofa.expand_ratios)
    assert set(ds) == set(ofa.depths)
    assert set(rs) == set(ofa.resolutions)
    for counts in (ks, es, ds):
        shares = np.array(list(counts.values())) / sum(counts.values())
        assert np.all(np.abs(shares - 1 / 3) < 0.05), counts
    assert max(rs.values()) < 3 * 600 / 25


def test_sample_many_gives_distinct_architectures(ofa, tiny) -> None:
    archs = ofa.sample_many(300, seed=1)
    assert len(archs) == len(set(archs)) == 300
    assert len(tiny.sample_many(300, seed=1)) == len(set(tiny.sample_many(300, seed=1)))
    assert ofa.sample_many(0) == []
    with pytest.raises(ValueError):
        ofa.sample_many(-1)
    with pytest.raises(ArchitectureError):
        tiny.sample_many(tiny.size(with_resolution=True) + 1, seed=0)
    # unique=False may repeat
    many = tiny.sample_many(900, seed=0, unique=False)
    assert len(many) == 900
    assert len(set(many)) < 900


def test_sample_many_can_draw_every_distinct_architecture(tiny) -> None:
    n = tiny.size() + 1  # 401 of tiny's 800 architectures
    archs = tiny.sample_many(n, seed=0)
    assert len(set(archs)) == n


def test_largest_and_smallest(ofa) -> None:
    big, small = ofa.largest(), ofa.smallest()
    assert big.ks == (7,) * 20
    assert big.e == (6,) * 20
    assert big.d == (4,) * 5
    assert big.r == 224
    assert small.ks == (3,) * 20
    assert small.e == (3,) * 20
    assert small.d == (2,) * 5
    assert small.r == 128
    assert ofa.largest(r=160).r == 160
    assert ofa.smallest(r=160).r == 160
    with pytest.raises(ArchitectureError):
        ofa.largest(r=161)


# ---------------------------------------------------------------------------- evolution
def test_mutate_with_prob_0_is_the_identity(ofa) -> None:
    for seed in range(20):
        arch = ofa.sample(seed)
        assert ofa.mutate(arch, seed=seed, prob=0.0) == arch


def test_mutate_with_prob_1_changes_something(ofa) -> None:
    changed = Counter()
    for seed in range(20):
        arch = ofa.sample(seed)
        child = ofa.mutate(arch, seed=seed + 100, prob=1.0)
        assert child != arch
        assert ofa.parse(child) == child
        both = set(_active(arch, ofa.max_depth)) & set(_active(child, ofa.max_depth))
        changed["ks"] += any(child.ks[j] != arch.ks[j] for j in both)
        changed["e"] += any(child.e[j] != arch.e[j] for j in both)
        changed["d"] += child.d != arch.d
        changed["r"] += child.r != arch.r
    # every kind of gene is resampled: kernels, expand ratios, depths and the resolution
    assert changed["ks"] == changed["e"] == changed["d"] == 20
    assert changed["r"] > 15


def test_mutate_resolution_only(ofa) -> None:
    arch = ofa.parse(OFA_SUBNET)
    rs = set()
    for seed in range(30):
        child = ofa.mutate(arch, seed=seed, prob=0.0, resolution_prob=1.0)
        assert (child.ks, child.e, child.d) == (arch.ks, arch.e, arch.d)
        rs.add(child.r)
    assert len(rs) > 5
    assert ofa.mutate(arch, seed=0, prob=1.0, resolution_prob=0.0).r == arch.r


def test_mutate_is_seeded_and_local(ofa) -> None:
    arch = ofa.parse(OFA_SUBNET)
    assert ofa.mutate(arch, seed=3, prob=0.1) == ofa.mutate(arch, seed=3, prob=0.1)
    changed = []
    for seed in range(30):
        child = ofa.mutate(arch, seed=seed, prob=0.1)
        changed.append(sum(x != y for x, y in zip(child.ks + child.e, arch.ks + arch.e,
                                                    strict=True)))
    # about 10% of the 40 layer genes are resampled, two thirds of those to a new value
    assert 0 < np.mean(changed) < 10


def test_crossover_children_take_each_gene_from_a_parent(ofa) -> None:
    a, b = ofa.sample(1), ofa.sample(2)
    from_a = from_b = 0
    distinct_children = set()
    for seed in range(30):
        child = ofa.crossover(a, b, seed=seed)
        assert ofa.parse(child) == child
        assert child.r in (a.r, b.r)
        for s in range(ofa.n_stages):
            assert child.d[s] in (a.d[s], b.d[s])
        for j in _active(child, ofa.max_depth):
            assert child.ks[j] in (a.ks[j], b.ks[j])
            assert child.e[j] in (a.e[j], b.e[j])
            from_a += child.ks[j] == a.ks[j] != b.ks[j]
            from_b += child.ks[j] == b.ks[j] != a.ks[j]
        distinct_children.add(child)
    assert from_a > 0
    assert from_b > 0
    assert len(distinct_children - {a, b}) > 10
    assert ofa.crossover(a, a, seed=0) == a
    assert ofa.crossover(a, b, seed=5) == ofa.crossover(a, b, seed=5)


# ---------------------------------------------------------------------------- encodings
def test_onehot_encoding_size_is_ofas(ofa) -> None:
    # OFA's accuracy-predictor input: (3 kernels + 3 ratios) * 20 layers + 25 resolutions
    assert ofa.encoding_size("onehot") == (3 + 3) * 20 + 25 == 145
    x = ofa.encode([ofa.parse(OFA_SUBNET), ofa.largest()])
    assert x.shape == (2, 145)
    assert x.dtype == np.float32
    for name in ("tiny", "cifar_mbv3", "ofa_mbv3_w12"):
        space = get_space(name)
        for kind in ("onehot", "ordinal"):
            assert space.encode(space.sample_many(3, seed=0), kind).shape == (
                3, space.encoding_size(kind))


def test_onehot_encodes_each_running_layer_and_zeros_skipped_ones(ofa) -> None:
    archs = [ofa.parse(OFA_SUBNET), *ofa.sample_many(30, seed=2), ofa.smallest()]
    x = ofa.encode(archs, "onehot")
    n = ofa.n_layers
    for arch, row in zip(archs, x, strict=True):
        ks_oh = row[: 3 * n].reshape(n, 3)
        e_oh = row[3 * n : 6 * n].reshape(n, 3)
        r_oh = row[6 * n :]
        active = set(_active(arch, ofa.max_depth))
        for j in range(n):
            if j in active:
                assert ks_oh[j].sum() == 1
                assert e_oh[j].sum() == 1
                assert ofa.kernel_sizes[int(ks_oh[j].argmax())] == arch.ks[j]
                assert ofa.expand_ratios[int(e_oh[j].argmax())] == arch.e[j]
            else:
                assert not ks_oh[j].any()
                assert not e_oh[j].any()
        assert r_oh.sum() == 1
        assert ofa.resolutions[int(r_oh.argmax())] == arch.r
        assert row.sum() == 2 * len(active) + 1
    assert len({row.tobytes() for row in x}) == len(set(archs))


def test_ordinal_encoding(ofa) -> None:
    archs = [ofa.parse(OFA_SUBNET), *ofa.sample_many(10, seed=4)]
    x = ofa.encode(archs, "ordinal")
    n, m = ofa.n_layers, ofa.n_stages
    assert x.shape == (len(archs), ofa.encoding_size("ordinal")) == (len(archs), 2 * n + m + 1)
    for arch, row in zip(archs, x, strict=True):
        active = set(_active(arch, ofa.max_depth))
        for j in range(n):
            assert row[j] == (arch.ks[j] if j in active else 0)
            assert row[n + j] == (arch.e[j] if j in active else 0)
        assert tuple(row[2 * n : 2 * n + m]) == arch.d
        assert row[-1] == arch.r


def test_encode_accepts_arrays_and_rejects_unknown_kinds(ofa) -> None:
    archs = ofa.sample_many(8, seed=9)
    arrays = ofa.to_arrays(archs)
    assert len(arrays) == 8
    assert arrays.ks.shape == (8, 20)
    assert arrays.d.shape == (8, 5)
    assert arrays.r.shape == (8,)
    for kind in ("onehot", "ordinal"):
        assert np.array_equal(ofa.encode(arrays, kind), ofa.encode(archs, kind))
    with pytest.raises(ValueError, match="onehot"):
        ofa.encode(archs, "binary")
    assert ofa.encode([], "ordinal").shape == (0, 46)
    assert ofa.costs([])["macs"].shape == (0,)


def test_onehot_encoding_of_no_architectures_is_empty(ofa) -> None:
    assert ofa.encode([], "onehot").shape == (0, ofa.encoding_size("onehot"))


def test_parse_file_reads_jsonl_and_json_lists(tmp_path):
    space = get_space("tiny")
    a, b = space.sample_many(2, seed=11)
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text(f"# two archs\n{a.to_json()}\n\n" + json.dumps({"arch": b.to_dict()}) + "\n")
    assert space.parse_file(jsonl) == [a, b]
    listed = tmp_path / "a.json"
    listed.write_text(json.dumps([b.to_dict(), a.to_dict()]))
    assert space.parse_file(listed) == [b, a]


def test_parse_file_names_the_bad_line_and_the_right_space(tmp_path):
    tiny = get_space("tiny")
    cifar_arch = get_space("cifar_mbv3").sample(0)
    path = tmp_path / "mixed.jsonl"
    path.write_text(tiny.sample(0).to_json() + "\n" + cifar_arch.to_json() + "\n")
    with pytest.raises(ArchitectureError, match=r"line 2: .*space cifar_mbv3"):
        tiny.parse_file(path)
    with pytest.raises(ArchitectureError, match="not found"):
        tiny.parse_file(tmp_path / "missing.jsonl")
