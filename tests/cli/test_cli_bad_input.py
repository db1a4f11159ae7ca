"""Bad input the hardening session found: each is one ``error:`` line and exit 2.

Before, each of these ended in a Python traceback (issue 17, finding 10). Every case also
checks that nothing was written.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from expect import one_error

from nas._data import shipped_supernet

ARCH = json.dumps({"ks": [3, 3, 3, 3], "e": [2, 2, 2, 2], "d": [1, 1], "r": 16})
NOT_UTF8 = b"\xff\xfe{\x80 ks: [3]\n"


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ---------------------------------------------------------------------- seeds
SEEDED = [
    ["spaces", "sample", "tiny"],
    ["supernet", "init", "-s", "tiny", "--out", "{tmp}/ck.safetensors"],
    ["search", "--space", "tiny"],
    ["latency", "fit", "--device", "cpu-1t", "--space", "tiny", "--db", "{tmp}/lat.sqlite"],
    ["latency", "measure", "--device", "cpu-1t", "--space", "tiny",
     "--db", "{tmp}/lat.sqlite"],
    ["proxies", "eval", "-s", "tiny", "-f", "{tmp}/a.jsonl", "-p", "macs"],
]


@pytest.mark.parametrize("argv", SEEDED, ids=lambda a: " ".join(a[:2]))
@pytest.mark.parametrize("seed", ["-5", "-1", str(2**32), str(2**64 + 7)])
def test_seed_out_of_range_is_one_line(tmp_path, run_nas, argv, seed):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    one_error(run_nas([*argv, "--seed", seed]), "--seed", seed, "0..4294967295")
    assert files_in(tmp_path) == []


def test_largest_seed_is_accepted(run_nas):
    code, out, err = run_nas(["spaces", "sample", "tiny", "--seed", str(2**32 - 1), "--jsonl"])
    assert code == 0, err
    assert out.strip(), err


def test_training_config_seed_out_of_range(tmp_path, run_nas):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("space: tiny\ndata: {source: digits}\nseed: -5\n"
                   "phases: [{task: full, epochs: 1, lr: 0.1}]\n")
    one_error(run_nas(["train", "--config", str(cfg), "--out", str(tmp_path / "run")]),
              "seed = -5")
    assert files_in(tmp_path) == ["c.yaml"]


# ---------------------------------------------------------------------- non-UTF-8 files
@pytest.mark.parametrize("argv", [
    ["arch", "info", "-s", "tiny", "--arch", "@{f}"],
    ["proxies", "eval", "-s", "tiny", "--arch-file", "{f}", "-p", "macs"],
    ["train", "--config", "{f}", "--out", "{tmp}/run"],
    ["search", "--config", "{f}"],
    ["latency", "import", "{tmp}/m.jsonl", "--space", "tiny", "--device", "cpu-1t",
     "--db", "{tmp}/lat.sqlite"],
], ids=lambda a: " ".join(a[:2]))
def test_non_utf8_file_is_one_line(tmp_path, run_nas, argv):
    f = tmp_path / "m.jsonl"
    f.write_bytes(NOT_UTF8)
    argv = [a.replace("{f}", str(f)).replace("{tmp}", str(tmp_path)) for a in argv]
    one_error(run_nas(argv), "UTF-8")
    assert files_in(tmp_path) == ["m.jsonl"]


# ---------------------------------------------------------------------- JSON limits
HUGE = "9" * 5000
DEEP = "[" * 100_000 + "]" * 100_000
DEEP_CELL = "[" * 50_000  # under the csv module's 128 KiB field limit


GOOD_ARCH = {"ks": [3, 3, 3, 3], "e": [2, 2, 2, 2], "d": [1, 1], "r": 16}
CSV_ARCH = '"' + json.dumps(GOOD_ARCH).replace('"', '""') + '"'


@pytest.mark.parametrize("name, content, needle", [
    ("m.jsonl", '{"latency_ms": ' + HUGE + "}\n", "over 4300 digits"),
    ("m.jsonl", '{"arch": ' + DEEP + ', "latency_ms": 1}\n', "nested too deep"),
    ("m.jsonl", json.dumps({"arch": GOOD_ARCH}) [:-1] + ', "latency_ms": 1' + "0" * 400
     + "}\n", "latency_ms must be finite"),
    ("m.jsonl", json.dumps({"arch": GOOD_ARCH, "latency_ms": 1, "n_runs": 10**400}) + "\n",
     "n_runs"),
    ("m.jsonl", json.dumps({"arch": GOOD_ARCH, "latency_ms": float("nan")}) + "\n",
     "latency_ms must be finite"),
    ("m.csv", f"arch,latency_ms\n{CSV_ARCH},{HUGE}\n", "latency_ms must be finite"),
    ("m.csv", f"arch,latency_ms\n{DEEP_CELL},1\n", "field 'arch' must be JSON"),
    ("m.csv", f"ks,e,d,r,latency_ms\n[3],[2],[1],{HUGE},1\n", "field 'r' must be JSON"),
    ("m.csv", f"arch,latency_ms,env\n{CSV_ARCH},1,{DEEP_CELL}\n", "field 'env' must be JSON"),
])
def test_import_refuses_huge_numbers_and_deep_nesting(tmp_path, run_nas, name, content, needle):
    f = tmp_path / name
    f.write_text(content)
    db = tmp_path / "lat.sqlite"
    one_error(run_nas(["latency", "import", str(f), "--space", "tiny", "--device", "cpu-1t",
                       "--db", str(db)]), needle)
    assert files_in(tmp_path) == [name]  # the database was not even created


@pytest.mark.parametrize("text", [DEEP, '{"r": ' + HUGE + "}"])
def test_arch_text_and_files_with_json_limits(tmp_path, run_nas, text):
    one_error(run_nas(["arch", "info", "-s", "tiny", "--arch", text]), "arch")
    f = tmp_path / "a.json"
    f.write_text(text)
    one_error(run_nas(["arch", "info", "-s", "tiny", "--arch", f"@{f}"]), str(f))
    one_error(run_nas(["proxies", "eval", "-s", "tiny", "-f", str(f), "-p", "macs"]), str(f))


# ---------------------------------------------------------------------- output paths
def test_supernet_init_out_a_folder(tmp_path, run_nas):
    (tmp_path / "d").mkdir()
    one_error(run_nas(["supernet", "init", "-s", "tiny", "--out", str(tmp_path / "d")]),
              "is a folder")
    (tmp_path / "f").write_text("x")
    one_error(run_nas(["supernet", "init", "-s", "tiny", "--out",
                       str(tmp_path / "f" / "ck.safetensors")]), "is a file")
    assert files_in(tmp_path) == ["d", "f"]


def test_supernet_init_out_new_dotdot_creates_no_folder(tmp_path, monkeypatch, run_nas):
    # found by test_fuzz_cli.py: "new/.." made new/, then failed to write
    monkeypatch.chdir(tmp_path)
    one_error(run_nas(["supernet", "init", "-s", "tiny", "--out", "new/.."]), "is a folder")
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("text", ["seed: " + HUGE + "\n", "a: " + "[" * 5000 + "\n"])
@pytest.mark.parametrize("command", ["train", "search"])
def test_yaml_with_huge_numbers_or_deep_nesting(tmp_path, run_nas, text, command):
    # found by test_fuzz_cli.py: PyYAML's own ValueError and RecursionError
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    one_error(run_nas([command, "--config", str(cfg)]), "not valid YAML")
    assert files_in(tmp_path) == ["c.yaml"]


# ---------------------------------------------------------------------- checkpoints
def _safetensors_with(path: Path, meta: dict[str, str]) -> Path:
    header = json.dumps({"__metadata__": meta}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    return path


@pytest.mark.parametrize("meta, needle", [
    ({"format": "nas.supernet", "version": "1", "space": "tiny", "extra": "{not json"},
     "not a JSON object"),
    ({"format": "nas.supernet", "version": "1", "space": "tiny", "extra": "[1, 2]"},
     "not a JSON object"),
    ({"format": "nas.supernet", "version": "1", "space": "tiny", "extra": "[" * 100_000},
     "not a JSON object"),
    ({"format": "nas.supernet", "version": "1"}, "names no search space"),
    ({"format": "nas.supernet", "space": "", "extra": "{}"}, "names no search space"),
])
def test_checkpoint_metadata_is_checked(tmp_path, run_nas, meta, needle):
    ck = _safetensors_with(tmp_path / "ck.safetensors", meta)
    one_error(run_nas(["supernet", "info", str(ck)]), needle)
    one_error(run_nas(["export", "-s", "tiny", "-c", str(ck), "--arch", ARCH, "--out",
                       str(tmp_path / "e")]), needle)
    assert files_in(tmp_path) == ["ck.safetensors"]


# ---------------------------------------------------------------------- journals
@pytest.mark.parametrize("content", [
    '{"op_code": 0}\n', "[1, 2]\n", '{"op_code": 99, "worker_id": "x"}\n', "null\n",
    '{"op_code": 0, "worker_id": "a", "study_name": "s", "directions": [1]}\ngarbage\n{}\n',
    "1e999\n",
])
def test_corrupt_journal_is_one_line(tmp_path, run_nas, content):
    j = tmp_path / "x.journal"
    j.write_text(content)
    for argv in (["results", "--storage", str(j)],
                 ["results", "--storage", str(j), "--study", "s"],
                 ["export", "--study", "s", "--storage", str(j), "--pareto", "--out",
                  str(tmp_path / "e")]):
        one_error(run_nas(argv), "corrupt")  # truncated or corrupt; corrupt or not a journal
    assert j.read_text() == content
    assert files_in(tmp_path) == ["x.journal"]


@pytest.mark.parametrize("storage", [
    "sqlite://", "sqlite:///:memory:", "sqlite+pysqlite:///{tmp}/x.db",
    "sqlite+pysqlite:///{tmp}/new/x.db", "x://a", "sqlite://a/x.db", "{tmp}/n/x.journal",
])
def test_reading_a_storage_creates_nothing(tmp_path, run_nas, storage):
    # found by test_fuzz_cli.py: an in-memory URL was a traceback, and a sqlite+driver URL
    # created the database it was asked to read
    storage = storage.replace("{tmp}", str(tmp_path))
    for study in ([], ["--study", "s"]):
        one_error(run_nas(["results", "--storage", storage, *study]))
    assert files_in(tmp_path) == []


def test_storage_that_is_a_folder(tmp_path, run_nas):
    one_error(run_nas(["results", "--storage", str(tmp_path)]), "is a folder")


def test_shipped_supernet_info_still_works(run_nas):
    code, out, err = run_nas(["supernet", "info", str(shipped_supernet()), "--json"])
    assert code == 0, err
    assert json.loads(out)["space"] == "tiny", err


def test_line_break_in_a_path_is_still_one_line(tmp_path, run_nas):
    one_error(run_nas(["results", "--storage", str(tmp_path / "a\nb.journal")]))


LONG = "9" * 300  # over NAME_MAX (255 bytes)


@pytest.mark.parametrize("argv", [
    ["supernet", "info", LONG],
    ["supernet", "init", "-s", "tiny", "--out", LONG],
    ["supernet", "init", "-s", "tiny", "--out", f"{LONG}/ck.safetensors"],
    ["verify", LONG],
    ["export", "-s", "tiny", "-c", str(shipped_supernet()), "--arch", ARCH, "--out", LONG],
    ["export", "-s", "tiny", "-c", LONG, "--arch", ARCH, "--out", "e"],
    ["latency", "import", f"{LONG}.jsonl", "--space", "tiny", "--device", "cpu-1t",
     "--db", "l.sqlite"],
    ["results", "--storage", LONG],
    ["results", "--storage", f"sqlite:///{LONG}"],
    ["report", "--study", "s", "--storage", LONG],
], ids=lambda a: " ".join(a[:2]))
def test_name_too_long_for_the_file_system(tmp_path, monkeypatch, run_nas, argv):
    # found by test_fuzz_cli.py: Path.is_file() raises ENAMETOOLONG instead of answering
    monkeypatch.chdir(tmp_path)
    one_error(run_nas(argv))
    assert files_in(tmp_path) == []
