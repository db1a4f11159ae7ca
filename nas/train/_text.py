"""Text for the language models of the ``gpt`` family: byte-level tokens, a split by whole
works, random training windows, and the mean loss of a subnet on held-out text.

Tokens are bytes: a work's ids are its UTF-8 bytes (0-255), and :data:`EOT` (256) ends each
work, so a byte-level space has ``vocab_size`` 257. No tokenizer needs a download.

The split keeps works whole (``val_works`` by name, every other work trains), so validation
text is never a neighbour of training text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nas.errors import DataError
from nas.train._formats import DATA_FORMATS, TextCorpus, detect_format

__all__ = ["BYTE_VOCAB", "EOT", "TextSplits", "TokenBatches", "encode_works", "lm_loss",
           "load_text_splits", "read_text_corpus", "windows"]

#: the end-of-text token that follows every work
EOT = 256
#: a byte-level vocabulary: 256 bytes and EOT
BYTE_VOCAB = 257


def encode_works(texts: Sequence[str]) -> np.ndarray:
    """Byte-level ids ``(n,)`` uint16 of ``texts``, each followed by :data:`EOT`."""
    parts: list[np.ndarray] = []
    for t in texts:
        parts.append(np.frombuffer(t.encode("utf-8"), dtype=np.uint8).astype(np.uint16))
        parts.append(np.array([EOT], dtype=np.uint16))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)


def read_text_corpus(source: str | Path, format: str = "auto") -> TextCorpus:
    """The works of a text source (a folder or archive of ``.txt`` files).

    Raises:
        DataError: a missing or corrupt source, or one of a format that holds no text.
    """
    if not Path(source).exists():
        raise DataError(f"text corpus not found: {source} (relative paths are relative to the "
                        f"working directory {Path.cwd()})")
    fmt = detect_format(source) if format == "auto" else format
    reader = DATA_FORMATS.get(fmt)
    if reader.modality != "text":
        raise DataError(f"{source} is of data format {fmt!r}, which holds {reader.modality}, "
                        "not text")
    return reader.load_text(source)


@dataclass(frozen=True, eq=False)
class TextSplits:
    """A corpus's training and validation tokens, split by whole works.

    Attributes:
        key: a short fingerprint of the source and the split.
    """

    train: np.ndarray
    val: np.ndarray
    train_works: tuple[str, ...]
    val_works: tuple[str, ...]
    source: str
    key: str

    def describe(self) -> str:
        return (f"{self.source}: {len(self.train_works)} works ({len(self.train):,} tokens) "
                f"train / {len(self.val_works)} works ({len(self.val):,} tokens) validation "
                f"({', '.join(self.val_works)})")


def load_text_splits(source: str | Path, val_works: Sequence[str],
                     format: str = "auto") -> TextSplits:
    """Read a text corpus and split it by works: ``val_works`` (by name) for validation, the
    rest for training.

    Raises:
        DataError: a bad source, a validation work the corpus lacks (listing those it has), or
            no work left to train on.
    """
    corpus = read_text_corpus(source, format)
    names = corpus.names
    missing = [w for w in val_works if w not in names]
    if missing:
        raise DataError(f"data val_works = {missing}: not works of {source}; its works are "
                        f"{', '.join(names)}")
    val = set(val_works)
    train_texts = [t for n, t in corpus.works if n not in val]
    if not train_texts:
        raise DataError(f"data val_works holds every work of {source}; leave at least one to "
                        "train on")
    val_texts = [t for n, t in corpus.works if n in val]
    key = hashlib.sha256("|".join([str(source), *sorted(val)]).encode()).hexdigest()[:16]
    return TextSplits(encode_works(train_texts), encode_works(val_texts),
                      tuple(n for n in names if n not in val),
                      tuple(n for n in names if n in val), str(source), key)


class TokenBatches:
    """Training batches of random windows of a token stream, ``len`` of them per pass.

    ``epoch(seed)`` yields ``(x, y)``: int64 ``(batch_size, block)`` inputs and the next
    tokens, the windows' starts drawn from ``seed`` (so a pass is repeatable from its seed:
    what resuming needs). The interface of :class:`~nas.train.BatchLoader` that the training
    loop uses.
    """

    def __init__(self, ids: np.ndarray, batch_size: int, block: int, steps: int) -> None:
        if len(ids) < block + 2:
            raise DataError(f"the training text has {len(ids)} tokens, fewer than a window of "
                            f"{block + 1}; use more text or a shorter context")
        self.ids = torch.from_numpy(ids.astype(np.int64))
        self.batch_size, self.block, self.steps = batch_size, block, steps

    def __len__(self) -> int:
        return self.steps

    def epoch(self, seed: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        rng = np.random.default_rng(seed)
        offsets = torch.arange(self.block + 1)
        for _ in range(self.steps):
            starts = torch.from_numpy(
                rng.integers(0, len(self.ids) - self.block - 1, self.batch_size))
            w = self.ids[starts[:, None] + offsets]  # (b, block + 1)
            yield w[:, :-1], w[:, 1:]


def windows(ids: np.ndarray, block: int, max_tokens: int | None = None) -> torch.Tensor:
    """Consecutive, non-overlapping windows ``(n, block + 1)`` of ``ids`` (each predicts
    its last ``block`` tokens), covering at most ``max_tokens`` predicted tokens."""
    n = (len(ids) - 1) // block
    if max_tokens is not None:
        n = min(n, max(1, max_tokens // block))
    if n < 1:
        raise DataError(f"the text has {len(ids)} tokens, fewer than a window of {block + 1}")
    t = torch.from_numpy(ids[: n * block + 1].astype(np.int64))
    return torch.stack([t[i * block: (i + 1) * block + 1] for i in range(n)])


@torch.no_grad()
def lm_loss(net: torch.nn.Module, arch: Mapping[str, Any] | Any, wins: torch.Tensor,
            batch_size: int = 16, device: str | torch.device = "cpu") -> float:
    """The mean next-token cross-entropy (nats per token) of subnet ``arch`` of the supernet
    ``net`` on ``wins`` (:func:`windows`); ``exp`` of it is the perplexity."""
    was_training = net.training
    net.eval()
    net.set_active(arch)  # type: ignore[operator]
    total, count = 0.0, 0
    for i in range(0, len(wins), batch_size):
        w = wins[i: i + batch_size].to(device)
        logits = net(w[:, :-1])  # (b, block, vocab)
        total += float(F.cross_entropy(logits.flatten(0, 1).float(), w[:, 1:].flatten(),
                                       reduction="sum"))
        count += w[:, 1:].numel()
    net.train(was_training)
    return total / count
