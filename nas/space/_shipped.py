"""Registers the spaces shipped in ``search_spaces/*.yaml`` (imported by the registry on first
use, so that importing :mod:`nas.space` reads no file)."""

from __future__ import annotations

from pathlib import Path

import yaml

from nas._data import data_dir
from nas.space._registry import SPACES, space_from_spec
from nas.space._spec import load_spec, spec_from_dict


def _register_shipped() -> None:
    folder = data_dir("search_spaces")
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".yaml"):
            if isinstance(entry, Path):
                spec = load_spec(entry)
            else:  # a file inside a zipped wheel
                spec = spec_from_dict(yaml.safe_load(entry.read_text()), where=entry.name)
            SPACES.add(str(getattr(spec, "name", "")), space_from_spec(spec))


_register_shipped()
