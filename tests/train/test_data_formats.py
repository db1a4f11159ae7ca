"""Dataset formats as plug-ins: DATA_FORMATS, the shared contract and the formats' own
checks (detect and load on each format's own tiny example), and a format added by a test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nas.errors import DataError
from nas.testing import check_plugin, parametrize_with_checks, plugin_checks
from nas.train import DATA_FORMATS, FORMATS, DataFormat, detect_format, load_dataset
from nas.train._formats import Raw


@parametrize_with_checks(DATA_FORMATS)
def test_format_contract(plugin: Any, check: Any) -> None:
    check(plugin)


def test_the_built_in_formats_are_registered() -> None:
    assert set(FORMATS) <= set(DATA_FORMATS.names())


def test_messages_list_the_registered_formats(tmp_path: Path) -> None:
    odd = tmp_path / "notes.txt"
    odd.write_text("x")
    with pytest.raises(DataError, match=r"set data format to one of \[.*'digits'.*'tar'\]"):
        detect_format(odd)
    with pytest.raises(DataError, match=r"'auto' or one of \[.*'npz'.*\], got 'bmp'"):
        load_dataset(odd, format="bmp")


class _CsvFormat(DataFormat):
    """A format of a test: ``label,p0,p1,...`` rows of 2x2 grey images."""

    name = "test-csv"
    description = "rows of label and 4 grey pixels (a test's format)"

    @classmethod
    def detect(cls, source: str | Path) -> bool:
        return Path(source).suffix == ".csv" and Path(source).is_file()

    @classmethod
    def load(cls, source: str | Path, *, image_size: int = 32) -> Raw:
        lines = Path(source).read_text().split()
        try:
            rows = np.asarray([[int(v) for v in line.split(",")] for line in lines])
        except ValueError as exc:
            raise DataError(f"{source}: not label,p0..p3 rows ({exc})") from None
        if rows.size == 0:
            raise DataError(f"{source}: no rows")
        x = np.repeat(rows[:, 1:].reshape(-1, 2, 2, 1).astype(np.uint8), 3, axis=-1)
        return x, rows[:, 0], None, None, ["a", "b"]

    @classmethod
    def example(cls, folder: Path) -> Path:
        (folder / "tiny.csv").write_text("0,1,2,3,4\n1,5,6,7,8\n0,9,9,9,9\n")
        return folder / "tiny.csv"


def test_a_format_registered_by_a_plugin_is_detected_and_loaded(tmp_path: Path) -> None:
    DATA_FORMATS.register(_CsvFormat)
    try:
        check_plugin(DATA_FORMATS, "test-csv")
        src = _CsvFormat.example(tmp_path)
        assert detect_format(src) == "test-csv"
        d = load_dataset(src, val_size=1, cache_dir=tmp_path / "cache")
        assert (d.format, len(d.train), d.classes) == ("test-csv", 2, ("a", "b"))
    finally:
        DATA_FORMATS.unregister("test-csv")
    assert "test-csv" not in DATA_FORMATS


def test_a_format_that_does_not_read_its_example_fails_the_checks() -> None:
    class Broken(_CsvFormat):
        name = "test-broken"

        @classmethod
        def load(cls, source: str | Path, *, image_size: int = 32) -> Raw:
            x = np.zeros((2, 4, 4), np.float32)  # not (n, h, w, 3) uint8
            return x, np.zeros(2, np.int64), None, None, ["a"]

    failed = []
    for check in plugin_checks(DATA_FORMATS, Broken):
        try:
            check(Broken)
        except AssertionError as exc:
            failed.append((check.__name__, str(exc)))
    assert [n for n, _ in failed] == ["check_registered", "check_detects_its_example",
                                      "check_loads_its_example",
                                      "check_a_broken_source_is_one_data_error"]
    assert "must be (n, h, w, 3) uint8" in failed[2][1]
