"""`nas verify` on a GPT export folder, and `nas export --prompt` for gpt spaces.

A GPT folder is checked as a CNN's is (every file's size and hash, nothing linked from
outside, nothing that is not the export's, every claim re-derived from the architecture),
and its recorded greedy generation is re-run in ONNX Runtime: an edit of any of it is one
`error:` line, exit 2.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from expect import one_error

from nas._data import shipped_supernet
from nas.export import export_gpt_subnet, verify_export
from nas.supernet import GPTSupernet, save_gpt_supernet

# heads differ per layer: each layer's cache has its own shape
ELASTIC = {"n_layer": 3, "n_embd": 32, "n_head": [4, 1, 2], "mlp": [128, 32, 64]}
UNIFORM = {"n_layer": 2, "n_embd": 16, "n_head": [2, 2], "mlp": [64, 32]}
Manifest = dict[str, Any]


@pytest.fixture(scope="module")
def net() -> GPTSupernet:
    """gpt_tiny's supernet, random weights scaled so that greedy generation does not repeat
    one token (as in test_gpt_export.py)."""
    torch.manual_seed(0)
    net = GPTSupernet.from_space("gpt_tiny")
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.5)
    return net.eval()


@pytest.fixture(scope="module")
def exports(net: GPTSupernet, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gptv")
    export_gpt_subnet(net, ELASTIC, root / "elastic", space="gpt_tiny")
    export_gpt_subnet(net, UNIFORM, root / "uniform", space="gpt_tiny")
    return {"elastic": root / "elastic", "uniform": root / "uniform"}


def _copy(src: Path, where: Path, edit: Callable[[Manifest], None] | None = None) -> Path:
    folder = where / "copy"
    shutil.copytree(src, folder)
    if edit is not None:
        manifest = json.loads((folder / "manifest.json").read_text())
        edit(manifest)
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


def _rehash(folder: Path, name: str) -> None:
    """Make the manifest vouch for ``name`` as it now is (a forger's edit)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    data = (folder / name).read_bytes()
    manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))


def test_a_fresh_export_verifies(run_nas, exports):
    code, out, err = run_nas(["verify", str(exports["elastic"])])
    assert code == 0, err
    assert "32 greedy tokens as recorded in ONNX Runtime and torch" in " ".join(out.split())
    code, out, err = run_nas(["verify", str(exports["uniform"]), "--json"])
    assert code == 0, err
    res = json.loads(out)
    manifest = json.loads((exports["uniform"] / "manifest.json").read_text())
    assert res["format"] == "nas.export.gpt/1"
    assert res["tokens"] == manifest["verification"]["tokens"]
    assert res["files"] == ["genai_config.json", "model.onnx", "weights.safetensors"]


def _set(path: str, value: Any) -> Callable[[Manifest], None]:
    """An edit of the manifest at ``a/b/0/c``."""
    def edit(manifest: Manifest) -> None:
        *parents, last = path.split("/")
        node: Any = manifest
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[int(last) if isinstance(node, list) else last] = value
    return edit


def _bump_token(manifest: Manifest) -> None:
    tokens = manifest["verification"]["tokens"]
    tokens[5] = (tokens[5] + 1) % 64


@pytest.mark.parametrize(("edit", "needles"), [
    (_set("macs", 1), ["macs 1 is not the architecture's"]),
    (_set("params", 10), ["params 10"]),
    (_set("arch", {**ELASTIC, "n_head": [4, 2, 2]}), ["arch_hash", "its arch"]),
    (_set("arch_hash", "0123456789abcdef"), ["arch_hash '0123456789abcdef'"]),
    (_set("cache/heads/1", 4), ["cache.heads[1] 4", "(1)"]),
    (_set("inputs/3/shape/1", 4), ["inputs[3].shape[1] 4"]),
    (_bump_token, ["verification.tokens[5]", "the graph generates"]),
    (_set("verification/prompt", [1] * 40), ["verification", "context of 32"]),
    (_set("files/model.onnx/sha256", "0" * 64), ["model.onnx", "sha256"]),
    (_set("files/weights.safetensors/bytes", 3), ["weights.safetensors", "bytes"]),
    (_set("format", "nas.export.gpt/2"), ["format", "nas.export/1"]),
], ids=["macs", "params", "arch", "arch_hash", "cache", "inputs", "token", "prompt",
        "hash", "bytes", "format"])
def test_an_edited_claim_is_one_error(run_nas, exports, tmp_path, edit, needles):
    folder = _copy(exports["elastic"], tmp_path, edit)
    one_error(run_nas(["verify", str(folder)]), *needles)


def test_a_swapped_weights_file_is_refused_even_when_rehashed(run_nas, exports, tmp_path):
    folder = _copy(exports["elastic"], tmp_path)
    shutil.copyfile(exports["uniform"] / "weights.safetensors", folder / "weights.safetensors")
    one_error(run_nas(["verify", str(folder)]), "weights.safetensors", "the manifest says")
    _rehash(folder, "weights.safetensors")  # the manifest now vouches for the swap
    one_error(run_nas(["verify", str(folder)]), "holds the weights of", "not the manifest's")


def test_weights_of_the_same_shape_but_other_values_disagree_with_the_graph(
        run_nas, net, exports, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = _copy(exports["elastic"], tmp_path)
    path = folder / "weights.safetensors"
    state = load_file(str(path))
    state["blocks.0.mlp.fc.weight"] = -state["blocks.0.mlp.fc.weight"]
    save_file(state, str(path), metadata={"space": "gpt_tiny",
                                          "arch": json.dumps(ELASTIC, separators=(",", ":"))})
    _rehash(folder, "weights.safetensors")
    one_error(run_nas(["verify", str(folder)]), "model.onnx", "differ")


def test_an_extra_file_is_refused(run_nas, exports, tmp_path):
    folder = _copy(exports["elastic"], tmp_path)
    (folder / "notes.txt").write_text("mine")
    one_error(run_nas(["verify", str(folder)]), "notes.txt", "not the export's")


def test_a_genai_config_for_elastic_heads_is_refused(run_nas, exports, tmp_path):
    folder = _copy(exports["elastic"], tmp_path)
    shutil.copyfile(exports["uniform"] / "genai_config.json", folder / "genai_config.json")
    _rehash(folder, "genai_config.json")
    one_error(run_nas(["verify", str(folder)]), "genai_config.json", "different head counts")


def test_an_edited_genai_config_is_refused(run_nas, exports, tmp_path):
    folder = _copy(exports["uniform"], tmp_path)
    cfg = json.loads((folder / "genai_config.json").read_text())
    cfg["model"]["decoder"]["num_attention_heads"] = 4
    (folder / "genai_config.json").write_text(json.dumps(cfg))
    _rehash(folder, "genai_config.json")
    one_error(run_nas(["verify", str(folder)]), "genai_config.json",
              "model.decoder.num_attention_heads")


def test_a_symlink_out_of_the_folder_is_refused(run_nas, exports, tmp_path):
    folder = _copy(exports["elastic"], tmp_path)
    (folder / "model.onnx").unlink()
    (folder / "model.onnx").symlink_to(exports["elastic"] / "model.onnx")
    one_error(run_nas(["verify", str(folder)]), "model.onnx", "symlink out of the export")


def test_the_library_verifies_both_formats_through_one_function(exports):
    res = verify_export(exports["elastic"])
    assert res["identical"] is True
    assert res["arch_hash"] == json.loads(
        (exports["elastic"] / "manifest.json").read_text())["arch_hash"]


# ---------------------------------------------------------------------- nas export --prompt
@pytest.fixture(scope="module")
def checkpoint(net: GPTSupernet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_gpt_supernet(net, tmp_path_factory.mktemp("ck") / "gpt.safetensors",
                             dtype="float32")


def _export_argv(checkpoint: Path, out: Path, *extra: str) -> list[str]:
    return ["export", "--space", "gpt_tiny", "--checkpoint", str(checkpoint), "--arch",
            json.dumps(UNIFORM), "--out", str(out), *extra]


def test_prompt_ids_and_new_tokens_are_the_verifications(run_nas, checkpoint, tmp_path):
    out = tmp_path / "e"
    code, _, err = run_nas(_export_argv(checkpoint, out, "--prompt", "ids:5, 17,42",
                                        "--new-tokens", "8"))
    assert code == 0, err
    v = json.loads((out / "manifest.json").read_text())["verification"]
    assert (v["prompt"], v["new_tokens"], len(v["tokens"])) == ([5, 17, 42], 8, 8)
    code, out_text, err = run_nas(["verify", str(out)])
    assert code == 0, err
    assert "8 greedy tokens" in out_text


@pytest.mark.parametrize(("extra", "needles"), [
    (["--prompt", "ROMEO:"], ["byte-level tokenizer", "--prompt ids:1,2,3"]),
    (["--prompt", "ids:1,x"], ["--prompt", "ids:1,2,3", "'x'"]),
    (["--prompt", "ids:"], ["--prompt", "comma"]),
    (["--prompt", "ids:3,64"], ["prompt[1]", "[0, 64)"]),
    (["--prompt", "ids:1,2", "--new-tokens", "40"], ["more than the model's context of 32"]),
    (["--new-tokens", "0"], ["new_tokens", "positive"]),
])
def test_a_bad_prompt_is_one_error_and_writes_nothing(run_nas, checkpoint, tmp_path, extra,
                                                      needles):
    one_error(run_nas(_export_argv(checkpoint, tmp_path / "e", *extra)), *needles)
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("extra", [["--prompt", "hello"], ["--new-tokens", "4"]])
def test_prompt_options_are_refused_on_an_ofa_space(run_nas, tmp_path, extra):
    line = one_error(run_nas(["export", "-s", "tiny", "-c", str(shipped_supernet()), "--arch",
                              "@missing.json", "--out", str(tmp_path / "e"), *extra]),
                     extra[0], "'ofa' family", "'gpt'")
    assert "missing.json" not in line  # refused before anything is read
    assert not (tmp_path / "e").exists()
