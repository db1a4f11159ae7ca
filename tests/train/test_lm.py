"""Language-model supernet training (issue 25 item 5): the text format, the split by works,
the shared loop's sandwich step on a tiny byte-level space, resuming, the gpt proxies."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.errors import CheckpointError, ConfigError, DataError
from nas.proxies import ProxyContext, get_proxy, score_of_perplexity
from nas.space import SPACES, GPTSpec, get_family_space, register_space
from nas.supernet import GPTSupernet, load_gpt_supernet, save_gpt_supernet
from nas.train import (
    EOT,
    LMTrainConfig,
    detect_format,
    load_text_splits,
    read_text_corpus,
    train_lm,
)

SPACE = "test_bytes_tiny"
WORDS = ["the", "king", "queen", "lord", "sword", "night", "love", "death", "crown", "fool"]


@pytest.fixture(scope="module", autouse=True)
def byte_space():
    if SPACE not in SPACES:
        register_space(GPTSpec(name=SPACE, family="gpt", vocab_size=257, n_ctx=16, head_dim=8,
                               n_layer=(1, 2), n_embd=(16, 32), n_head=(1, 2), mlp=(32, 64)))
    yield
    SPACES.unregister(SPACE)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    works = root / "works"
    works.mkdir()
    for i in range(4):
        text = " ".join(rng.choice(WORDS, 600)) + "\n"
        (works / f"work{i}_gut.txt").write_text(text, encoding="utf-8")
    out = root / "works.tar.gz"
    with tarfile.open(out, "w:gz") as tf:
        tf.add(works, arcname="works")
    return out


def _cfg(corpus: Path, out: Path, **kw) -> LMTrainConfig:
    raw = {"space": SPACE, "out": str(out), "data": {"source": str(corpus),
                                                     "val_works": ["work3_gut"]},
           "steps": 8, "checkpoint_every": 4, "warmup_steps": 1, "batch_size": 4,
           "optim": {"lr": 0.01}, "eval": {"tokens": 256}, **kw}
    return LMTrainConfig.from_dict(raw, where="test")


def test_the_text_format_splits_by_whole_works(corpus: Path) -> None:
    assert detect_format(corpus) == "lm-text"
    works = dict(read_text_corpus(corpus).works)
    d = load_text_splits(corpus, ["work3_gut"])
    assert d.val_works == ("work3_gut",)
    assert "work3_gut" not in d.train_works
    assert set(d.train_works) | set(d.val_works) == set(works)
    # validation is exactly its work's bytes and end-of-text: nothing of training in it
    assert d.val.tolist() == [*works["work3_gut"].encode(), EOT]
    assert len(d.train) == sum(len(works[w].encode()) + 1 for w in d.train_works)
    assert int((d.train == EOT).sum()) == 3


@pytest.mark.parametrize(("make", "needle"), [
    (lambda tmp: tmp / "missing.tar.gz", "not found"),
    (lambda tmp: (tmp / "bad.tar.gz").write_bytes(b"\x1f\x8b\x08garbage") and tmp / "bad.tar.gz",
     "bad.tar.gz"),
])
def test_a_missing_or_corrupt_corpus_is_one_line(tmp_path, make, needle) -> None:
    with pytest.raises(DataError, match=needle) as info:
        load_text_splits(make(tmp_path), ["x"])
    assert "\n" not in str(info.value)


def test_an_unknown_validation_work_is_one_line(corpus: Path) -> None:
    with pytest.raises(DataError, match=r"val_works = \['hamlet'\].*work0_gut") as info:
        load_text_splits(corpus, ["hamlet"])
    assert "\n" not in str(info.value)


def test_training_lowers_the_loss_and_ships_float16(corpus: Path, tmp_path: Path) -> None:
    cfg = _cfg(corpus, tmp_path / "run", ship=str(tmp_path / "ship.safetensors"))
    r = train_lm(cfg, progress=False)
    first, last = r.metrics[0], r.metrics[-1]
    assert r.progress.step == 8
    assert not r.stopped_early
    assert last["val_loss_largest"] < np.log(257)  # below a uniform guess over the bytes
    assert last["train_loss"] < first["train_loss"]
    assert (tmp_path / "run" / "metrics.csv").read_text().startswith("time,step,train_loss")
    shipped = load_gpt_supernet(tmp_path / "ship.safetensors")
    assert shipped.space_name == SPACE
    assert (tmp_path / "ship.safetensors").stat().st_size < r.checkpoint.stat().st_size


def test_a_time_budget_stops_cleanly_and_still_writes_the_supernet(
        corpus: Path, tmp_path: Path) -> None:
    r = train_lm(_cfg(corpus, tmp_path / "run"), progress=False, budget_minutes=1e-9)
    assert r.stopped_early
    assert r.progress.step == 1
    assert r.checkpoint.is_file()
    assert not (tmp_path / "run" / "checkpoints" / "latest.json").exists()


@pytest.mark.parametrize("largest_only", [0, 4])
def test_kill_and_resume_continues_at_the_same_step_with_the_same_state(
        corpus: Path, tmp_path: Path, largest_only: int) -> None:
    # with largest_only=4 the cut is where the sandwich starts
    whole = train_lm(_cfg(corpus, tmp_path / "whole", largest_only_steps=largest_only),
                     progress=False)
    # a run "killed" after its checkpoint of step 4: its latest.json names that one
    cut = tmp_path / "cut"
    train_lm(_cfg(corpus, cut, largest_only_steps=largest_only), progress=False)
    ck = cut / "checkpoints"
    latest = json.loads((ck / "latest.json").read_text())
    assert latest["progress"]["step"] == 8
    s4 = "s0000004"
    latest.update(tag=s4, supernet=f"{s4}.safetensors", state=f"{s4}.state.pt",
                  progress=load_gpt_supernet(ck / f"{s4}.safetensors").checkpoint_meta["progress"])
    (ck / "latest.json").write_text(json.dumps(latest))
    (cut / "supernet.safetensors").unlink()
    with pytest.raises(ConfigError, match="--resume") as info:
        train_lm(_cfg(corpus, cut, largest_only_steps=largest_only), progress=False)
    assert "step 4" in str(info.value)
    again = train_lm(_cfg(corpus, cut, largest_only_steps=largest_only), progress=False,
                     resume=True)
    assert again.progress.step == whole.progress.step == 8
    assert [m["step"] for m in again.metrics] == [4, 8]
    a, b = load_gpt_supernet(whole.checkpoint), load_gpt_supernet(again.checkpoint)
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=k)


def test_the_first_steps_can_train_the_largest_alone(corpus: Path, tmp_path: Path) -> None:
    """largest_only_steps=4 of 8: the first four steps move only what the largest subnet
    reaches through its own loss, so a run that stops there equals four steps of the largest
    trained alone with the same batches, and differs from the sandwich's first four."""
    first = train_lm(_cfg(corpus, tmp_path / "a", largest_only_steps=4), progress=False)
    sandwich = train_lm(_cfg(corpus, tmp_path / "b"), progress=False)
    alone = LMTrainConfig.from_dict({**_cfg(corpus, tmp_path / "c").to_dict(),
                                     "largest_only_steps": 7}, where="test")
    lone = train_lm(alone, progress=False)
    step4 = {}
    for run in ("a", "c"):
        net = load_gpt_supernet(tmp_path / run / "checkpoints" / "s0000004.safetensors")
        step4[run] = net.state_dict()
    for k, x in step4["a"].items():
        torch.testing.assert_close(x, step4["c"][k], rtol=0, atol=0, msg=k)
    sand4 = load_gpt_supernet(tmp_path / "b" / "checkpoints" / "s0000004.safetensors")
    assert any(not torch.equal(x, sand4.state_dict()[k]) for k, x in step4["a"].items())
    assert first.progress.step == sandwich.progress.step == lone.progress.step == 8
    with pytest.raises(ConfigError, match=r"largest_only_steps = 8: must be < steps \(8\)"):
        _cfg(corpus, tmp_path, largest_only_steps=8)


def test_a_checkpoint_of_another_geometry_is_one_line(corpus: Path, tmp_path: Path) -> None:
    other = GPTSupernet.from_space("gpt_tiny")
    save_gpt_supernet(other, tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="geometry") as info:
        train_lm(_cfg(corpus, tmp_path / "run", init=str(tmp_path / "other.safetensors")),
                 progress=False)
    assert "\n" not in str(info.value)


def test_the_config_refuses_an_ofa_space_and_steps_the_checkpoints_do_not_divide(
        corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"space.*gpt family"):
        _cfg(corpus, tmp_path, space="tiny")
    with pytest.raises(ConfigError, match="checkpoint_every = 3: must divide steps"):
        _cfg(corpus, tmp_path, checkpoint_every=3)


def test_the_gpt_proxies(corpus: Path, tmp_path: Path) -> None:
    r = train_lm(_cfg(corpus, tmp_path / "run", steps=12, checkpoint_every=12),
                 progress=False)
    ctx = ProxyContext.build(SPACE, checkpoint=r.checkpoint, cache=False)
    sp = get_family_space(SPACE)
    archs = [sp.largest(), sp.smallest()]
    ppl = get_proxy(f"perplexity:text={corpus},tokens=256").score(archs, ctx)
    assert np.all(np.isfinite(ppl))
    assert np.all(ppl < 0)
    np.testing.assert_allclose(score_of_perplexity(np.exp(-ppl)), ppl)
    # the mapping is monotone: a lower perplexity is a higher score
    assert np.all(np.diff(score_of_perplexity([1.5, 2.0, 8.0, 257.0])) < 0)
    ne = get_proxy("nonembedding-params").score(archs, ctx)
    assert ne[0] > ne[1]
    assert ne[0] == sp.params(sp.largest()) - (257 + 16) * 32 - 2 * 32
    with pytest.raises(ConfigError, match="not space 'tiny'"):
        tiny = get_family_space("tiny")
        get_proxy("nonembedding-params").score([tiny.largest()],
                                               ProxyContext(space=tiny, cache=None))  # type: ignore[arg-type]


def test_perplexity_refuses_a_space_that_is_not_byte_level() -> None:
    sp = get_family_space("gpt_tiny")
    ctx = ProxyContext(space=sp, supernet=GPTSupernet.from_space("gpt_tiny"),  # type: ignore[arg-type]
                       cache=None)
    with pytest.raises(ConfigError, match="vocabulary of 64, not 257"):
        get_proxy("perplexity").score([sp.largest()], ctx)


def test_the_shipped_supernet_s_largest_subnet_is_clearly_better_than_its_smallest() -> None:
    """Inherited perplexity per byte on the first 8,192 tokens of the shipped held-out works
    (Macbeth, Twelfth Night): the trained supernet's largest subnet well below its smallest,
    both far below a uniform guess over 257 bytes (deterministic: fixed weights and text)."""
    from nas._data import shipped_supernet
    from nas.proxies import ProxyContext, get_proxy

    sp = get_family_space("gpt_shakespeare")
    ctx = ProxyContext.build(sp.name, checkpoint=shipped_supernet(sp.name), cache=False)
    score = get_proxy("perplexity", tokens=8192).score([sp.largest(), sp.smallest()], ctx)
    large, small = np.exp(-np.asarray(score))
    assert large < 0.8 * small
    assert small < 20 < 257
