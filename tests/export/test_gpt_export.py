"""Export of a GPT subnet for generation: one ONNX graph with a KV cache, driven by plain
ONNX Runtime + numpy, against torch."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from expect import one_error

from nas.errors import ArchitectureError, CheckpointError, ConfigError, ExportError
from nas.export import export_gpt_subnet
from nas.space import get_space
from nas.supernet import GPTSupernet, save_gpt_supernet

# heads differ per layer: each layer's cache has its own shape
ELASTIC = {"n_layer": 3, "n_embd": 32, "n_head": [4, 1, 2], "mlp": [128, 32, 64]}
UNIFORM = {"n_layer": 2, "n_embd": 16, "n_head": [2, 2], "mlp": [64, 32]}


@pytest.fixture(scope="module")
def net() -> GPTSupernet:
    """gpt_tiny's supernet with random weights large enough that greedy generation does not
    repeat one token (GPT-2's initialisation makes a tied model echo its input)."""
    torch.manual_seed(0)
    net = GPTSupernet.from_space("gpt_tiny")
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.5)
    return net.eval()


@pytest.fixture(scope="module")
def exported(net: GPTSupernet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gpt") / "e"
    export_gpt_subnet(net, ELASTIC, out, space="gpt_tiny")
    return out


def _session(folder: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])


def _generate(sess: ort.InferenceSession, manifest: dict[str, Any], prompt: np.ndarray,
              n: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """The README's loop: what a user writes from the manifest alone."""
    cache = manifest["cache"]
    past = {f"past_key_values.{i}.{kv}": np.zeros((len(prompt), h, 0, cache["head_dim"]),
                                                  np.float32)
            for i, h in enumerate(cache["heads"]) for kv in ("key", "value")}
    ids, tokens, logits_seen = prompt, [], []
    names = [o.name for o in sess.get_outputs()]
    for _ in range(n):
        outs = dict(zip(names, sess.run(None, {"input_ids": ids, **past}), strict=True))
        logits_seen.append(outs["logits"])
        ids = outs["logits"][:, -1].argmax(-1)[:, None].astype(np.int64)
        tokens.append(ids)
        past = {k: outs[k.replace("past_key_values", "present")] for k in past}
    return np.concatenate(tokens, axis=1), logits_seen


@torch.no_grad()
def _torch_generate(gpt: torch.nn.Module, prompt: np.ndarray, n: int) -> np.ndarray:
    ids, past, tokens = torch.from_numpy(prompt), None, []
    for _ in range(n):
        logits, past = gpt(ids, past, use_cache=True)
        ids = logits[:, -1].argmax(-1)[:, None]
        tokens.append(ids.numpy())
    return np.concatenate(tokens, axis=1)


def test_greedy_tokens_are_identical_in_torch_and_onnxruntime(net, exported):
    manifest = json.loads((exported / "manifest.json").read_text())
    prompt = np.array([[5, 17, 42]], dtype=np.int64)
    got, _ = _generate(_session(exported), manifest, prompt, 30)  # 3 + 30 - 1 <= 32
    want = _torch_generate(net.extract(ELASTIC).eval(), prompt, 30)
    assert got.tolist() == want.tolist()
    assert len(set(got[0].tolist())) > 3  # a generation, not one token repeated
    v = manifest["verification"]
    assert v["identical"] is True
    assert v["new_tokens"] >= 32
    assert len(v["tokens"]) == v["new_tokens"]
    assert v["tokens"] == _torch_generate(net.extract(ELASTIC).eval(),
                                          np.array([v["prompt"]]), v["new_tokens"])[0].tolist()


def test_logits_agree_within_the_stated_tolerance_at_prefill_and_decoding(net, exported):
    manifest = json.loads((exported / "manifest.json").read_text())
    allowed = manifest["verification"]["allowed"]
    assert 0 < allowed <= 1e-4
    gpt = net.extract(ELASTIC).eval()
    prompt = np.array([[1, 2, 3, 60, 61, 9]], dtype=np.int64)
    _, seen = _generate(_session(exported), manifest, prompt, 2)
    with torch.no_grad():
        full = gpt(torch.from_numpy(prompt)).numpy()  # (1, 6, vocab), no cache
        nxt = full[:, -1].argmax(-1)[:, None]
        longer = gpt(torch.from_numpy(np.concatenate([prompt, nxt], 1))).numpy()
    assert seen[0].shape == (1, 6, 64)
    assert np.abs(seen[0] - full).max() <= allowed  # prefill, every position
    assert seen[1].shape == (1, 1, 64)
    assert np.abs(seen[1][:, -1] - longer[:, -1]).max() <= allowed  # one decoding step


def test_a_batch_of_two_runs_each_row_as_alone(net, exported):
    manifest = json.loads((exported / "manifest.json").read_text())
    sess = _session(exported)
    prompts = np.array([[5, 17, 42, 8], [30, 2, 2, 63]], dtype=np.int64)
    both, _ = _generate(sess, manifest, prompts, 12)
    for row in range(2):
        alone, _ = _generate(sess, manifest, prompts[row:row + 1], 12)
        assert both[row].tolist() == alone[0].tolist()
    assert both.tolist() == _torch_generate(net.extract(ELASTIC).eval(), prompts, 12).tolist()


def test_the_manifest_says_how_to_drive_the_graph(exported):
    m = json.loads((exported / "manifest.json").read_text())
    space = get_space("gpt_tiny")
    arch = space.parse(ELASTIC)
    assert m["format"] == "nas.export.gpt/1"
    assert m["arch"] == arch.to_dict()
    assert m["arch_hash"] == arch.hash
    assert m["macs"] == space.macs(arch)
    assert m["params"] == space.params(arch)
    assert (m["vocab_size"], m["context_length"], m["head_dim"]) == (64, 32, 8)
    assert m["cache"]["heads"] == [4, 1, 2]
    sess = _session(exported)
    graph_inputs = {i.name: i.shape for i in sess.get_inputs()}
    graph_outputs = {o.name: o.shape for o in sess.get_outputs()}
    assert {i["name"] for i in m["inputs"]} == set(graph_inputs)
    assert {o["name"] for o in m["outputs"]} == set(graph_outputs)
    for i, h in enumerate([4, 1, 2]):
        assert graph_inputs[f"past_key_values.{i}.key"][1:] == [h, "past_sequence", 8]
        assert graph_outputs[f"present.{i}.value"][1] == h
    assert graph_inputs["input_ids"] == ["batch", "sequence"]
    assert m["tokenizer"]["kind"] == "ids"  # 64 tokens: not the 256 bytes
    assert m["verification"]["rule"].startswith("max|onnx - torch|")
    # elastic heads: onnxruntime-genai's config has one head count, so none is written
    assert m["genai"]["written"] is False
    assert "different head counts" in m["genai"]["note"]
    assert sorted(p.name for p in exported.iterdir()) == [
        "manifest.json", "model.onnx", "weights.safetensors"]
    for name, info in m["files"].items():
        assert hashlib.sha256((exported / name).read_bytes()).hexdigest() == info["sha256"]


def test_uniform_heads_get_a_genai_config_naming_the_graphs_tensors(net, tmp_path):
    out = tmp_path / "u"
    m = export_gpt_subnet(net, UNIFORM, out, space="gpt_tiny").manifest
    assert m["genai"]["written"] is True
    assert m["genai"]["verified"] is False
    cfg = json.loads((out / "genai_config.json").read_text())
    dec = cfg["model"]["decoder"]
    assert (dec["num_attention_heads"], dec["num_key_value_heads"], dec["head_size"],
            dec["num_hidden_layers"], dec["hidden_size"]) == (2, 2, 8, 2, 16)
    assert cfg["model"]["context_length"] == 32
    assert cfg["model"]["vocab_size"] == 64
    assert cfg["search"]["past_present_share_buffer"] is False
    sess = _session(out)
    inputs = {i.name for i in sess.get_inputs()}
    outputs = {o.name for o in sess.get_outputs()}
    for layer in range(2):
        assert dec["inputs"]["past_key_names"] % layer in inputs
        assert dec["inputs"]["past_value_names"] % layer in inputs
        assert dec["outputs"]["present_key_names"] % layer in outputs
    assert dec["inputs"]["input_ids"] in inputs
    assert dec["outputs"]["logits"] in outputs
    assert m["files"]["genai_config.json"]["sha256"] == hashlib.sha256(
        (out / "genai_config.json").read_bytes()).hexdigest()


def test_a_byte_level_space_reads_text_prompts(tmp_path):
    torch.manual_seed(1)
    net = GPTSupernet.from_space("gpt_shakespeare").eval()
    arch = {"n_layer": 2, "n_embd": 128, "n_head": [2, 2], "mlp": [512, 512]}
    m = export_gpt_subnet(net, arch, tmp_path / "s", prompt="ROMEO:").manifest
    assert m["tokenizer"]["kind"] == "bytes"
    assert m["tokenizer"]["eos_token_id"] == 256
    assert m["verification"]["prompt"] == list(b"ROMEO:")
    assert m["verification"]["new_tokens"] == 32


@pytest.mark.parametrize(("kwargs", "error", "needle"), [
    ({"arch": {**ELASTIC, "n_embd": 48}}, ArchitectureError, "n_embd must be one of [16, 32]"),
    ({"prompt": list(range(10))}, ConfigError, "more than the model's context of 32"),
    ({"prompt": [3, 64]}, ConfigError, "prompt[1] must be a token id in [0, 64)"),
    ({"prompt": "text"}, ConfigError, "a text prompt needs a byte-level tokenizer"),
])
def test_bad_input_is_one_error_and_writes_nothing(net, tmp_path, kwargs, error, needle):
    args = {"arch": ELASTIC, **kwargs}
    with pytest.raises(error) as info:
        export_gpt_subnet(net, args.pop("arch"), tmp_path / "e", space="gpt_tiny", **args)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_a_supernet_of_another_vocabulary_is_refused(tmp_path):
    other = GPTSupernet(vocab_size=100, n_ctx=32, n_layer=3, n_embd=32, n_head=4, head_dim=8,
                        mlp=128)
    with pytest.raises(CheckpointError, match="vocab_size 100, space gpt_tiny needs 64"):
        export_gpt_subnet(other, ELASTIC, tmp_path / "e", space="gpt_tiny")
    assert list(tmp_path.iterdir()) == []


def test_a_corrupt_tokenizer_record_is_refused(net, tmp_path):
    torch.manual_seed(0)
    bad = GPTSupernet.from_space("gpt_tiny")
    bad.checkpoint_meta = {"tokenizer": {"kind": "sentencepiece"}}
    with pytest.raises(CheckpointError, match=r"tokenizer .* is not understood"):
        export_gpt_subnet(bad, ELASTIC, tmp_path / "e")
    assert list(tmp_path.iterdir()) == []


def test_failed_verification_leaves_nothing_behind(net, tmp_path):
    with pytest.raises(ExportError, match="differ from torch's"):
        export_gpt_subnet(net, ELASTIC, tmp_path / "e", space="gpt_tiny", rtol=-1.0)
    assert list(tmp_path.iterdir()) == []


def test_cli_exports_a_gpt_subnet_end_to_end(net, tmp_path, run_nas):
    ck = save_gpt_supernet(net, tmp_path / "gpt.safetensors", dtype="float32")
    out = tmp_path / "e"
    argv = ["export", "--space", "gpt_tiny", "--checkpoint", str(ck), "--arch",
            json.dumps(UNIFORM), "--out", str(out)]
    code, stdout, err = run_nas(argv)
    assert code == 0, err
    assert "greedy tokens identical in torch and ONNX Runtime" in " ".join(stdout.split())
    m = json.loads((out / "manifest.json").read_text())
    assert m["checkpoint"]["sha256"] == hashlib.sha256(ck.read_bytes()).hexdigest()
    assert (out / "genai_config.json").is_file()
    manifest_before = (out / "manifest.json").read_bytes()
    one_error(run_nas(argv), "not empty", "--overwrite")
    assert (out / "manifest.json").read_bytes() == manifest_before
    code, _, err = run_nas([*argv, "--overwrite", "--json"])
    assert code == 0, err


def test_cli_refuses_a_checkpoint_of_another_vocabulary(tmp_path, run_nas):
    other = GPTSupernet(vocab_size=100, n_ctx=32, n_layer=3, n_embd=32, n_head=4, head_dim=8,
                        mlp=128)
    ck = save_gpt_supernet(other, tmp_path / "other.safetensors")
    one_error(run_nas(["export", "--space", "gpt_tiny", "--checkpoint", str(ck), "--arch",
                       json.dumps(ELASTIC), "--out", str(tmp_path / "e")]),
              "vocab_size 100", "gpt_tiny")
    assert not (tmp_path / "e").exists()


def test_the_documented_generate_loop_reproduces_the_verification(exported):
    """docs/gpt_export.md's loop, as written, run on an export folder in a fresh process."""
    import re
    import subprocess
    import sys

    doc = (Path(__file__).parents[2] / "docs" / "gpt_export.md").read_text()
    code = re.findall(r"```python\n(.*?)```", doc, re.S)[0]
    assert 10 <= len(code.strip().splitlines()) <= 20
    assert 'folder = "gpt_export"' in code
    code = code.replace('folder = "gpt_export"', f"folder = {str(exported)!r}")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("True ["), run.stdout
