"""A study journal cut short or corrupt is an error (one line, exit 2), never a smaller study.

Optuna's journal reader skips a last record that is cut or not JSON, so a journal cut in the
middle of a record read as the records before it ("0 subnet(s) from 0 trials", exit 0), and a
search resumed on it would append to the cut record. ``open_storage`` checks the last record.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from nas.search import SearchConfig, run_search


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The bytes of a real journal of a tiny finished search (study ``s``)."""
    path = tmp_path_factory.mktemp("journal") / "s.journal"
    run_search(SearchConfig.model_validate({
        "space": "tiny", "objectives": ["macs", "params"], "engine": "predictor",
        "generations": 10, "n_trials": 10, "study": "s", "storage": str(path)}),
        progress=False)
    return path.read_bytes()


def _mid_line(data: bytes, at: float) -> int:
    """An offset inside a record near ``at`` of the file (not on a line break)."""
    cut = int(len(data) * at)
    while data[cut - 1:cut] == b"\n" or data[cut:cut + 1] == b"\n":
        cut += 1
    return cut


def _cuts(data: bytes) -> dict[str, bytes]:
    first_break = data.index(b"\n")
    middle = data.index(b"\n", len(data) // 2)
    return {
        "mid-line of the first record": data[:first_break // 2],
        "mid-file": data[:_mid_line(data, 0.5)],
        "mid-line of the last record": data[:len(data) - 7],
        "no final line break": data[:-1],
        "a record garbled in the middle": data[:middle] + b"}}" + data[middle:],
        "a last record that is not JSON": data + b'{"op_code": 4, "stud\n',
    }


@pytest.mark.parametrize("case", list(_cuts(b"x" * 100 + b"\n" + b"y" * 100 + b"\n")))
def test_a_cut_or_corrupt_journal_is_one_line_and_changes_nothing(
        case: str, journal: bytes, tmp_path: Path, run_nas) -> None:
    path = tmp_path / "s.journal"
    path.write_bytes(_cuts(journal)[case])
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    for argv in (["results", "--study", "s", "--storage", str(path)],
                 ["search", "--study", "s", "--storage", str(path), "--resume", "--no-progress"],
                 ["search", "--space", "tiny", "-O", "macs", "-O", "params", "--engine",
                  "predictor", "--study", "t", "--storage", str(path), "--no-progress"]):
        code, out, err = run_nas(argv)
        assert code == 2, (argv, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith(f"error: journal storage {path} ")
        assert "corrupt" in lines[0]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_the_whole_journal_still_reads(journal: bytes, tmp_path: Path, run_nas) -> None:
    path = tmp_path / "s.journal"
    path.write_bytes(journal)
    code, out, err = run_nas(["results", "--study", "s", "--storage", str(path)])
    assert code == 0, err
    assert "from 10 trials" in out
