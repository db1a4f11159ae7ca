"""A non-editable install carries the search-space specs and device profiles."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_ships_specs_and_device_profiles(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("nas-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    specs = {p.name for p in (ROOT / "search_spaces").glob("*.yaml")}
    assert specs
    assert {f"nas/_data/search_spaces/{n}" for n in specs} <= names
    devices = {p.name for p in (ROOT / "latency_db" / "devices").glob("*.yaml")}
    assert {f"nas/_data/devices/{n}" for n in devices} <= names
    assert "nas/py.typed" in names
    assert "nas/_data/supernets/tiny-digits.safetensors" in names  # make demo's supernet
    # OFA's accuracy predictor and Note10 tables, converted (--proxy ofa-imagenet, note10)
    assert {"nas/_data/predictors/ofa-imagenet.json", "nas/_data/tables/note10.json"} <= names
