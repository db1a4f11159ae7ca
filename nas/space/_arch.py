"""The architecture type: an immutable, canonical, hashable subnet description."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

__all__ = ["Architecture"]


@dataclass(frozen=True)
class Architecture:
    """A subnet of a search space, in Once-for-All's format plus the space's name.

    Build one through :meth:`nas.space.SearchSpace.parse` (or ``sample``/``largest``...), which
    validates it and puts it in canonical form: values at layers beyond a stage's depth do not
    change the network, so they are fixed to the space's first kernel size and expand ratio and
    take no part in equality, hashes or encodings.

    Attributes:
        space: name of the search space the architecture belongs to.
        ks: kernel size per layer slot (``n_stages * max_depth`` entries).
        e: expand ratio per layer slot.
        d: depth per stage of elastic depth.
        r: input resolution (square).
        fixed_depth: layers of the space's fixed-depth last stage, whose slots follow the
            elastic stages' in ``ks`` and ``e`` and always run (0: none). A property of the
            space, not of the architecture: no part of equality, hashes or ``to_dict``.
    """

    space: str
    ks: tuple[int, ...]
    e: tuple[int, ...]
    d: tuple[int, ...]
    r: int
    fixed_depth: int = field(default=0, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """OFA's own format: ``{"ks": [...], "e": [...], "d": [...], "r": int}``."""
        return {"ks": list(self.ks), "e": list(self.e), "d": list(self.d), "r": self.r}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @cached_property
    def hash(self) -> str:
        """Stable 16-hex-digit id of (space, canonical architecture)."""
        payload = json.dumps({"space": self.space, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def max_depth(self) -> int:
        return (len(self.ks) - self.fixed_depth) // len(self.d)

    def active_layers(self) -> list[tuple[int, int, int, int]]:
        """``(stage, index_in_stage, kernel, expand)`` for every layer that runs (the
        fixed-depth last stage's, if any, as stage ``len(d)``)."""
        md = self.max_depth()
        depths = [*self.d, self.fixed_depth] if self.fixed_depth else list(self.d)
        return [
            (s, i, self.ks[s * md + i], self.e[s * md + i])
            for s, depth in enumerate(depths)
            for i in range(depth)
        ]

    def __str__(self) -> str:
        return f"{self.space}:{self.hash}"
