"""Where the shipped data files are: the repository's folders, or the wheel's copies.

In a source checkout (and an editable install) the specs are read from ``search_spaces/`` and
``latency_db/devices/`` at the top of the repository; a wheel carries the same files as the
packages ``nas._data.search_spaces`` and ``nas._data.devices`` (see setup.py).
"""

from __future__ import annotations

from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

__all__ = ["data_dir", "shipped_supernet", "shipped_text"]

_REPO_DIRS = {"search_spaces": "search_spaces", "devices": "latency_db/devices"}


def data_dir(kind: str) -> Traversable:
    """The folder of shipped ``kind`` files (``"search_spaces"`` or ``"devices"``)."""
    repo = Path(__file__).resolve().parents[2] / _REPO_DIRS[kind]
    if repo.is_dir():
        return repo
    return resources.files(f"nas._data.{kind}")


def shipped_supernet(name: str = "tiny-digits") -> Path:
    """A supernet checkpoint shipped with the package (``nas/_data/supernets/<name>``).

    ``tiny-digits``: the ``tiny`` space trained with progressive shrinking on scikit-learn's
    bundled digits (``nas train --config experiments/digits_demo/config.yaml``), the
    supernet of ``make demo``.
    """
    path = Path(__file__).resolve().parent / "supernets" / f"{name}.safetensors"
    if not path.is_file():
        from nas.errors import UnknownNameError

        known = sorted(p.stem for p in path.parent.glob("*.safetensors"))
        raise UnknownNameError(f"no shipped supernet {name!r}; shipped: {', '.join(known)}")
    return path


def shipped_text(name: str = "shakespeare_val") -> Path:
    """A folder of held-out text shipped with the package (``nas/_data/lm/<name>``, one
    ``.txt`` per work; provenance in ``nas/_data/lm/README.md``).

    ``shakespeare_val``: the validation works of the ``gpt_shakespeare`` supernet, what the
    ``perplexity`` proxy scores on.
    """
    path = Path(__file__).resolve().parent / "lm" / name
    if not path.is_dir():
        from nas.errors import UnknownNameError

        known = sorted(p.name for p in path.parent.iterdir() if p.is_dir())
        raise UnknownNameError(f"no shipped text {name!r}; shipped: {', '.join(known)}")
    return path
