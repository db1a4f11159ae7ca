"""The whole chain a user runs on a Hugging Face GPT-2, through the command line:
``save_pretrained`` -> ``nas supernet import-hf`` -> ``nas export`` of the largest subnet ->
plain ONNX Runtime + numpy, against ``transformers``' own forward (a randomly initialised tiny
model built offline from a config: nothing downloads, the format is what is tested)."""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

transformers = pytest.importorskip("transformers")

from nas.space import get_space  # noqa: E402

# gpt_tiny's largest geometry (vocabulary 64, context 32, 3 layers, 32 wide, 4 heads of 8,
# MLP 4 x 32): `nas export --space gpt_tiny` accepts the imported supernet
CONFIG: dict[str, Any] = {"vocab_size": 64, "n_positions": 32, "n_embd": 32, "n_layer": 3,
                          "n_head": 4, "bos_token_id": 63, "eos_token_id": 63}
ATOL = 1e-4  # the bound, ONNX Runtime against transformers


@pytest.fixture(autouse=True)
def _quiet() -> None:
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)


def _hf_model() -> Any:
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**CONFIG))
    with torch.no_grad():  # weights of order 1: GPT-2's init gives logits near 0 and echoes
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * (0.3 if "weight" in name else 0.1))
    return model.eval()


def _hf_step(model: Any, ids: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:
    """transformers' forward with its KV cache (``cache`` since 5.2x, ``past_key_values``
    before, which newer versions deprecate)."""
    name = "cache" if "cache" in inspect.signature(model.forward).parameters \
        else "past_key_values"
    with torch.no_grad():
        res = model(ids, use_cache=True, **{name: cache})
    return res.logits, getattr(res, name)


def _onnx_step(sess: ort.InferenceSession, ids: np.ndarray, past: dict[str, np.ndarray]
               ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One call of the graph, as docs/gpt_export.md drives it: logits and the next past."""
    names = [o.name for o in sess.get_outputs()]
    out = dict(zip(names, sess.run(None, {"input_ids": ids, **past}), strict=True))
    return out["logits"], {k: out[k.replace("past_key_values", "present")] for k in past}


def test_hf_gpt2_import_export_onnx_matches_transformers(tmp_path: Path, run_nas: Any) -> None:
    model = _hf_model()
    hf = tmp_path / "gpt2-tiny"
    model.save_pretrained(hf)
    assert (hf / "model.safetensors").is_file()

    ck = tmp_path / "gpt.safetensors"
    code, stdout, err = run_nas(["supernet", "import-hf", str(hf), "--out", str(ck),
                                 "--dtype", "float32", "--json"])
    assert code == 0, err
    assert json.loads(stdout)["hf_file"] == "model.safetensors"

    largest = get_space("gpt_tiny").largest()
    assert largest.to_dict() == {"n_layer": 3, "n_embd": 32, "n_head": [4, 4, 4],
                                 "mlp": [128, 128, 128]}
    out = tmp_path / "export"
    code, _, err = run_nas(["export", "--space", "gpt_tiny", "--checkpoint", str(ck),
                            "--arch", largest.to_json(), "--out", str(out)])
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["verification"]["identical"] is True
    assert manifest["cache"]["heads"] == [4, 4, 4]

    # prefill on a batch of two prompts, then decoding steps with the cache, both sides
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    hd = manifest["head_dim"]
    prompt = np.array([[5, 17, 42, 8, 30, 2], [60, 1, 33, 33, 9, 50]], dtype=np.int64)
    past = {f"past_key_values.{i}.{kv}": np.zeros((len(prompt), h, 0, hd), np.float32)
            for i, h in enumerate(manifest["cache"]["heads"]) for kv in ("key", "value")}
    ids, hf_ids, hf_past = prompt, torch.from_numpy(prompt), None
    onnx_tokens, hf_tokens = [], []
    for step in range(8):
        logits, past = _onnx_step(sess, ids, past)
        hf_logits, hf_past = _hf_step(model, hf_ids, hf_past)
        want = hf_logits.numpy()
        assert logits.shape == want.shape == (2, prompt.shape[1] if step == 0 else 1, 64)
        if step == 0:
            assert np.abs(want).max() > 1  # logits large enough to disagree
        diff = np.abs(logits - want).max()
        assert diff <= ATOL, f"step {step}: max |onnx - transformers| = {diff:.2e}"
        ids = logits[:, -1].argmax(-1)[:, None].astype(np.int64)
        hf_ids = hf_logits[:, -1].argmax(-1)[:, None]
        onnx_tokens.append(ids[:, 0].tolist())
        hf_tokens.append(hf_ids[:, 0].tolist())
    assert past["past_key_values.0.key"].shape == (2, 4, prompt.shape[1] + 7, hd)
    assert onnx_tokens == hf_tokens
    assert len({t for row in onnx_tokens for t in row}) > 2  # a generation, not one token

    # and transformers' own greedy generate() agrees (it would stop at end-of-text, 63)
    assert all(63 not in row for row in onnx_tokens)
    with torch.no_grad():
        gen = model.generate(torch.from_numpy(prompt), max_new_tokens=8, do_sample=False,
                             pad_token_id=63)
    assert gen[:, prompt.shape[1]:].T.tolist() == onnx_tokens
