"""Hugging Face GPT-2 in and out, against ``transformers`` itself (randomly initialised tiny
models built offline from a config: the format is what is tested)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")

from nas.errors import CheckpointError, ExportError  # noqa: E402
from nas.supernet import (  # noqa: E402
    GPTSupernet,
    export_hf_gpt2,
    import_hf_gpt2,
    load_gpt_supernet,
    save_gpt_supernet,
)

CONFIG: dict[str, Any] = {"vocab_size": 80, "n_positions": 32, "n_embd": 48, "n_layer": 3,
                          "n_head": 4, "bos_token_id": 79, "eos_token_id": 79}


@pytest.fixture(autouse=True)
def _quiet() -> None:
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)


def _hf_model(seed: int = 0, **overrides: Any) -> Any:
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**{**CONFIG, **overrides}))
    with torch.no_grad():  # weights of order 1: GPT-2's init gives logits near 0
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * (0.2 if "weight" in name else 0.1))
    return model.eval()


def _ids(seq: int = 16) -> torch.Tensor:
    return torch.randint(0, CONFIG["vocab_size"], (2, seq),
                         generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.Tensor]:
    """A GPT2LMHeadModel saved with save_pretrained (safetensors), and its logits."""
    transformers.logging.set_verbosity_error()
    model = _hf_model()
    folder = tmp_path_factory.mktemp("hf") / "gpt2-tiny"
    model.save_pretrained(folder)
    with torch.no_grad():
        return folder, model(_ids()).logits


def _bin_folder(src: Path, dst: Path) -> Path:
    """The layout older transformers wrote: torch.save of the state_dict (tied head too)."""
    model = transformers.GPT2LMHeadModel.from_pretrained(src)
    dst.mkdir()
    (dst / "config.json").write_text((src / "config.json").read_text())
    torch.save(model.state_dict(), dst / "pytorch_model.bin")
    return dst


def _legacy_folder(src: Path, dst: Path) -> Path:
    """The original GPT-2 upload's layout: GPT2Model's names (no ``transformer.``, no
    ``lm_head``) with each block's causal-mask buffers, in pytorch_model.bin."""
    model = transformers.GPT2LMHeadModel.from_pretrained(src)
    state = {k.removeprefix("transformer."): v for k, v in model.state_dict().items()
             if k != "lm_head.weight"}
    n = CONFIG["n_positions"]
    for i in range(CONFIG["n_layer"]):
        state[f"h.{i}.attn.bias"] = torch.ones(n, n).tril().view(1, 1, n, n)
        state[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    dst.mkdir()
    (dst / "config.json").write_text((src / "config.json").read_text())
    torch.save(state, dst / "pytorch_model.bin")
    return dst


def test_import_reproduces_transformers_logits(hf_folder: tuple[Path, torch.Tensor],
                                               tmp_path: Path) -> None:
    folder, ref = hf_folder
    bin_folder = _bin_folder(folder, tmp_path / "bin")
    legacy = _legacy_folder(folder, tmp_path / "legacy")
    for src, file in ((folder, "model.safetensors"), (bin_folder, "pytorch_model.bin"),
                      (legacy, "pytorch_model.bin")):
        net, meta = import_hf_gpt2(src)
        assert meta["hf_file"] == file
        assert len(meta["hf_sha256"]) == 64
        assert net.geometry["head_dim"] == 12
        assert net.geometry["mlp"] == 4 * 48
        with torch.no_grad():
            got = net(_ids())
        assert ref.abs().max() > 1  # logits that can disagree
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)  # fp32: max diff ~1e-6

    # fp16 checkpoint: the weights round to half precision, logits (up to ~4.4) move by
    # ~5e-3
    path = save_gpt_supernet(net, tmp_path / "gpt.safetensors", meta=meta)
    back = load_gpt_supernet(path)
    assert back.checkpoint_meta["hf_sha256"] == meta["hf_sha256"]
    with torch.no_grad():
        torch.testing.assert_close(back(_ids()), ref, rtol=0, atol=2e-2)
    full = save_gpt_supernet(net, tmp_path / "gpt32.safetensors", dtype="float32")
    with torch.no_grad():
        torch.testing.assert_close(load_gpt_supernet(full)(_ids()), ref, rtol=0, atol=1e-5)


def test_a_subnet_written_back_loads_in_transformers(hf_folder: tuple[Path, torch.Tensor],
                                                     tmp_path: Path) -> None:
    net, _ = import_hf_gpt2(hf_folder[0])
    ids = _ids()
    for arch in ({"n_layer": 2, "n_embd": 24, "n_head": [2, 2], "mlp": [100, 100]},
                 net.largest()):
        out = export_hf_gpt2(net, arch, tmp_path / f"sub{arch['n_layer']}")
        model = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
        assert model.config.n_embd == arch["n_embd"]
        assert model.config.n_inner == arch["mlp"][0]
        assert model.config.eos_token_id == 79
        net.set_active(arch)
        with torch.no_grad():
            torch.testing.assert_close(model(ids).logits, net(ids), rtol=0, atol=1e-5)
    with torch.no_grad():  # the largest written back is the model imported
        torch.testing.assert_close(model(ids).logits, hf_folder[1], rtol=0, atol=1e-5)


def test_export_refuses_what_gpt2s_config_cannot_say(tmp_path: Path) -> None:
    net = GPTSupernet(vocab_size=16, n_ctx=8, n_layer=2, n_embd=16, n_head=4, head_dim=4,
                      mlp=32)
    with pytest.raises(ExportError, match="layer 1 has heads 2, layer 0 4"):
        export_hf_gpt2(net, {"n_layer": 2, "n_embd": 16, "n_head": [4, 2], "mlp": [32, 32]},
                       tmp_path / "a")
    with pytest.raises(ExportError, match="layer 1 has MLP width 16, layer 0 32"):
        export_hf_gpt2(net, {"n_layer": 2, "n_embd": 16, "n_head": [4, 4], "mlp": [32, 16]},
                       tmp_path / "b")
    with pytest.raises(ExportError, match="differs from n_embd 12"):
        export_hf_gpt2(net, {"n_layer": 1, "n_embd": 12, "n_head": [4], "mlp": [32]},
                       tmp_path / "c")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(("field", "value", "message"), [
    ("add_cross_attention", True, "add_cross_attention True is not supported"),
    ("scale_attn_by_inverse_layer_idx", True, "scale_attn_by_inverse_layer_idx True"),
    ("activation_function", "relu", r"activation_function 'relu' .*'gelu_new'"),
    ("model_type", "llama", "model_type 'llama' is not supported"),
    ("n_head", 5, "n_embd 48 is not supported .*divisible by n_head 5"),
    ("tie_word_embeddings", False, "tie_word_embeddings False"),
])
def test_unsupported_configs_are_refused_in_one_line(hf_folder: tuple[Path, torch.Tensor],
                                                     tmp_path: Path, field: str, value: Any,
                                                     message: str) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    cfg = json.loads((hf_folder[0] / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, field: value}))
    (folder / "model.safetensors").write_bytes((hf_folder[0] / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match=message):
        import_hf_gpt2(folder)


class _Evil:
    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("pwned",))


def test_bad_weights_are_refused_in_one_line(hf_folder: tuple[Path, torch.Tensor],
                                             tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text((hf_folder[0] / "config.json").read_text())
    with pytest.raises(CheckpointError,
                       match=r"holds no model\.safetensors or pytorch_model\.bin"):
        import_hf_gpt2(folder)
    torch.save({"transformer.wte.weight": torch.zeros(80, 48), "x": _Evil()},
               folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="refused unread"):
        import_hf_gpt2(folder)
    state = transformers.GPT2LMHeadModel.from_pretrained(hf_folder[0]).state_dict()
    del state["transformer.h.2.mlp.c_fc.bias"]
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"missing h\.2\.mlp\.c_fc\.bias"):
        import_hf_gpt2(folder)
    cfg = json.loads((hf_folder[0] / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "n_inner": 64}))
    state = transformers.GPT2LMHeadModel.from_pretrained(hf_folder[0]).state_dict()
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"h.0.mlp.c_fc.weight has shape \(48, 192\), "
                       r"config.json implies \(48, 64\)"):
        import_hf_gpt2(folder)


def test_cli_import_and_export(hf_folder: tuple[Path, torch.Tensor], tmp_path: Path,
                               run_nas: Any) -> None:
    out = tmp_path / "gpt.safetensors"
    code, stdout, err = run_nas(["supernet", "import-hf", str(hf_folder[0]), "--out", str(out),
                                 "--json"])
    assert code == 0, err
    assert json.loads(stdout)["geometry"]["n_layer"] == 3
    code, stdout, err = run_nas(["supernet", "info", str(out), "--json"])
    assert code == 0, err
    info = json.loads(stdout)
    assert info["geometry"]["n_embd"] == 48
    assert info["dtype"] == "float16"
    assert info["extra"]["source"] == "huggingface-gpt2"
    assert out.is_file()
    code, _, err = run_nas(["supernet", "import-hf", str(hf_folder[0]), "--out", str(out)])
    assert code == 2
    assert err.startswith("error: --out")
    assert "--overwrite" in err
    code, _, err = run_nas(["supernet", "import-hf", str(tmp_path / "none"), "--out",
                            str(tmp_path / "x.safetensors")])
    assert code == 2
    assert err.count("\n") == 1
    assert "not found" in err
    assert not (tmp_path / "x.safetensors").exists()

    arch = {"n_layer": 2, "n_embd": 24, "n_head": [2, 2], "mlp": [64, 64]}
    code, _, err = run_nas(["supernet", "export-hf", str(out), "--out", str(tmp_path / "hf"),
                            "--arch", json.dumps(arch)])
    assert code == 0, err
    model = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf")
    assert model.config.n_layer == 2
    bad = {**arch, "n_head": [2, 1]}
    code, _, err = run_nas(["supernet", "export-hf", str(out), "--out", str(tmp_path / "hf2"),
                            "--arch", json.dumps(bad)])
    assert code == 2
    assert err == "error: layer 1 has heads 1, layer 0 2: GPT-2's config has " \
        "one n_head for every layer\n"
    assert not (tmp_path / "hf2").exists()
