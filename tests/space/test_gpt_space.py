"""The ``gpt`` family's spaces: format, validation, which blocks a depth keeps, and MACs and
parameters against a direct count of GPT-2's tensors and matrix products."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from nas.errors import ArchitectureError, ConfigError
from nas.space import GPTArchitecture, GPTSpace, get_family_space, kept_blocks, load_spec


def _space(name: str) -> GPTSpace:
    sp = get_family_space(name)
    assert isinstance(sp, GPTSpace)
    return sp


def _hf_tensors(sp: GPTSpace, a: GPTArchitecture) -> dict[str, tuple[int, ...]]:
    """The shapes of a GPT2LMHeadModel state dict of ``a`` (the tied head not repeated)."""
    d, hd = a.n_embd, sp.head_dim
    t: dict[str, tuple[int, ...]] = {"wte": (sp.vocab_size, d), "wpe": (sp.n_ctx, d)}
    for i, (h, m) in enumerate(zip(a.n_head, a.mlp, strict=True)):
        w = h * hd
        t |= {f"h.{i}.ln_1.weight": (d,), f"h.{i}.ln_1.bias": (d,),
              f"h.{i}.attn.c_attn.weight": (d, 3 * w), f"h.{i}.attn.c_attn.bias": (3 * w,),
              f"h.{i}.attn.c_proj.weight": (w, d), f"h.{i}.attn.c_proj.bias": (d,),
              f"h.{i}.ln_2.weight": (d,), f"h.{i}.ln_2.bias": (d,),
              f"h.{i}.mlp.c_fc.weight": (d, m), f"h.{i}.mlp.c_fc.bias": (m,),
              f"h.{i}.mlp.c_proj.weight": (m, d), f"h.{i}.mlp.c_proj.bias": (d,)}
    return t | {"ln_f.weight": (d,), "ln_f.bias": (d,)}


def _count_params(shapes: dict[str, tuple[int, ...]]) -> int:
    total = 0
    for shape in shapes.values():
        n = 1
        for s in shape:
            n *= s
        total += n
    return total


def _count_macs(sp: GPTSpace, a: GPTArchitecture, context: int) -> int:
    """One token's multiply-accumulates, product by product: a (1, k) @ (k, n) is k*n."""
    d, hd = a.n_embd, sp.head_dim
    products: list[tuple[int, int]] = []
    for h, m in zip(a.n_head, a.mlp, strict=True):
        products.append((d, 3 * h * hd))  # c_attn: q, k and v of the token
        for _ in range(h):
            products.append((hd, context))  # q . k for every position
            products.append((context, hd))  # the softmax weights times v
        products.append((h * hd, d))  # attention c_proj
        products += [(d, m), (m, d)]  # MLP
    products.append((d, sp.vocab_size))  # the tied head
    return sum(k * n for k, n in products)


def test_gpt2_s_largest_subnet_has_gpt2_small_s_parameters() -> None:
    sp = _space("gpt2")
    big = sp.largest()
    assert big.to_dict() == {"n_layer": 12, "n_embd": 768, "n_head": [12] * 12,
                             "mlp": [3072] * 12}
    assert sp.params(big) == 124_439_808  # GPT-2 small, embeddings tied
    small = sp.smallest()
    assert (small.n_layer, small.n_embd, small.n_head, small.mlp) == (3, 192, (3,) * 3,
                                                                      (768,) * 3)


@pytest.mark.parametrize("name", ["gpt_tiny", "gpt_shakespeare", "gpt2"])
def test_costs_match_a_direct_count(name: str) -> None:
    sp = _space(name)
    archs = [sp.smallest(), sp.largest(), *sp.sample_many(4, seed=0)]
    for a in archs:
        assert sp.params(a) == _count_params(_hf_tensors(sp, a)), a
        for context in (1, 7, sp.n_ctx):
            assert sp.macs(a, context) == _count_macs(sp, a, context), (a, context)
    assert sp.macs(archs[0]) == _count_macs(sp, archs[0], sp.n_ctx)  # default: n_ctx


def test_a_context_past_the_space_s_is_refused_in_one_line() -> None:
    sp = _space("gpt_tiny")
    for bad in (33, 0, "8", True):
        with pytest.raises(ArchitectureError) as info:
            sp.macs(sp.largest(), bad)  # type: ignore[arg-type]
        assert str(info.value) == (f"context must be an int in [1, 32] (the context of "
                                   f"space gpt_tiny), got {bad!r}")


def test_a_depth_keeps_its_first_blocks_and_the_last() -> None:
    sp = _space("gpt2")
    assert kept_blocks(sp, 12) == list(range(12))
    assert kept_blocks(sp, 3) == [0, 1, 11]
    assert kept_blocks(sp.spec, 8) == [0, 1, 2, 3, 4, 5, 6, 11]
    assert sp.kept_blocks(sp.smallest()) == [0, 1, 11]
    with pytest.raises(ArchitectureError, match=r"n_layer must be one of \[3, 4, .*got 2"):
        kept_blocks(sp, 2)


def _tiny_raw(**changes: Any) -> dict[str, Any]:
    raw = yaml.safe_load((Path(__file__).parents[2] / "search_spaces/gpt_tiny.yaml")
                         .read_text())
    return raw | changes


def test_block_order_chooses_the_blocks_and_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(_tiny_raw(block_order=[1, 2, 0])))
    spec = load_spec(path)
    assert [kept_blocks(spec, n) for n in (1, 2, 3)] == [[1], [1, 2], [0, 1, 2]]  # type: ignore[arg-type]
    path.write_text(yaml.safe_dump(_tiny_raw(block_order=[0, 0, 1])))
    with pytest.raises(ConfigError) as info:
        load_spec(path)
    assert "\n" not in str(info.value)
    assert "block_order must order the blocks 0..2 (max n_layer = 3), each once; got [0, 0, 1]" \
        in str(info.value)
    path.write_text(yaml.safe_dump(_tiny_raw(n_head=[1, 8])))
    with pytest.raises(ConfigError, match=r"max\(n_head\) \* head_dim = 64 is more than "
                                          r"max\(n_embd\) = 32"):
        load_spec(path)


@pytest.mark.parametrize(("change", "message"), [
    ({"n_layer": 4}, "n_layer must be one of [1, 2, 3], got 4 (space gpt_tiny)"),
    ({"n_embd": 24}, "n_embd must be one of [16, 32], got 24 (space gpt_tiny)"),
    ({"n_head": [4, 4]}, "n_head must have 3 entries (one per layer, n_layer = 3), got 2"),
    ({"mlp": [32, 64, 100]}, "mlp[2] must be one of [32, 64, 128], got 100 (layer 3)"),
    ({"n_head": [4, 4, 3]}, "n_head[2] must be one of [1, 2, 4], got 3 (layer 3)"),
    ({"ks": [3]}, "arch has unknown field(s) ['ks']; allowed: n_layer, n_embd, n_head, mlp "
                  "(space gpt_tiny)"),
])
def test_a_bad_architecture_is_one_line_naming_field_value_and_choices(
        change: dict[str, Any], message: str) -> None:
    sp = _space("gpt_tiny")
    raw = sp.largest().to_dict() | change
    with pytest.raises(ArchitectureError) as info:
        sp.parse(json.dumps(raw))
    assert str(info.value) == message


def test_the_architecture_format_and_its_canonical_json() -> None:
    sp = _space("gpt_tiny")
    a = sp.parse('{"n_layer": 2, "n_embd": 16, "n_head": [1, 4], "mlp": [128, 32]}')
    assert a.to_json() == '{"n_layer":2,"n_embd":16,"n_head":[1,4],"mlp":[128,32]}'
    assert sp.parse({**a.to_dict(), "space": "gpt_tiny"}) == a
    assert str(a) == f"gpt_tiny:{a.hash}"
    assert sp.encode([a], "ordinal").tolist() == [[2, 16, 1, 4, 0, 128, 32, 0]]


def test_the_shakespeare_space_ships_its_trained_supernet() -> None:
    from safetensors import safe_open

    from nas._data import shipped_supernet

    sp = _space("gpt_shakespeare")
    assert "trained here and shipped" in sp.description
    assert (sp.vocab_size, sp.n_ctx, sp.max_layer, max(sp.spec.n_embd)) == (257, 256, 6, 192)
    with safe_open(str(shipped_supernet("gpt_shakespeare")), "pt") as f:
        meta = f.metadata()
    assert (meta["space"], meta["family"], meta["dtype"]) == ("gpt_shakespeare", "gpt", "float16")
    assert json.loads(meta["extra"])["progress"]["step"] == 3000  # the run of record, finished


# ---------------------------------------------------------------------- the commands
def test_arch_info_counts_per_token_at_a_context(run_nas: Any) -> None:
    sp = _space("gpt_tiny")
    a = sp.sample(seed=3)
    code, out, _ = run_nas(["arch", "info", "-s", "gpt_tiny", "-a", a.to_json(),
                            "--context", "8", "--json"])
    assert code == 0, out
    info = json.loads(out)
    assert (info["macs"], info["params"], info["context"]) == (sp.macs(a, 8), sp.params(a), 8)
    assert info["kept_blocks"] == sp.kept_blocks(a)
    assert sum(info["layer_macs"]) + a.n_embd * sp.vocab_size == info["macs"]
    code, out, _ = run_nas(["arch", "info", "-s", "gpt_tiny", "-a", a.to_json()])
    assert code == 0
    assert "per token at context 32" in " ".join(out.split())
    code, _, err = run_nas(["arch", "info", "-s", "gpt_tiny", "-a", a.to_json(),
                            "--context", "33"])
    assert code == 2
    assert err.strip() == ("error: context must be an int in [1, 32] (the context of space "
                           "gpt_tiny), got 33")
    code, _, err = run_nas(["arch", "info", "-s", "tiny", "-a",
                            get_family_space("tiny").largest().to_json(), "--context", "8"])
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "--context" in err


def test_spaces_list_show_and_sample_show_the_gpt_spaces(run_nas: Any) -> None:
    code, out, _ = run_nas(["spaces", "list", "--json"])
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["gpt2"]["family"] == "gpt"
    assert rows["gpt2"]["context"] == 1024
    assert rows["tiny"]["resolutions"] == [16, 24]
    code, out, _ = run_nas(["spaces", "show", "gpt2", "--json"])
    assert code == 0
    info = json.loads(out)
    assert info["largest"]["params"] == 124_439_808
    assert info["kept_blocks"]["3"] == [0, 1, 11]
    code, out, _ = run_nas(["spaces", "sample", "gpt_tiny", "-n", "3", "--jsonl"])
    sp = _space("gpt_tiny")
    archs = [sp.parse(line) for line in out.splitlines()]
    assert len(set(archs)) == 3
    code, out, _ = run_nas(["spaces", "show", "gpt_tiny"])
    assert code == 0
    assert "heads per layer" in out
