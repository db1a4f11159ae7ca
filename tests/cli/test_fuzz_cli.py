"""Property-based fuzzing of the command line and the file readers behind it.

Whatever the input (odd bytes in a file, numbers of thousands of digits, NaN and infinity,
deep nesting, negative or huge integers, paths with ``?``, ``..``, ``%41``, spaces or
unicode), a command ends in one of two ways:

* exit 0 with its result, or
* exit 2 with one line on stderr naming what was wrong (``error: ...``, click's own usage
  errors included: an option of the wrong type is ``error: --n = 'x': ...``),

never a traceback, and never a partly written output: after a failure the folders it writes
to hold exactly what they held before.

Commands run in-process through the real entry point (``nas.cli.main``). Those that start Ray
or train (``search``, ``serve``, ``train``, ``demo``, ``latency measure``) are driven only
with input that fails validation before any work starts. Sizes: the ``default`` hypothesis
profile of ``tests/conftest.py`` (``make test``), ``nightly`` for ``make fuzz``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from nas._data import shipped_supernet

pytestmark = pytest.mark.fuzz

Run = Callable[[list[str]], tuple[int, str, str]]
GOOD_ARCH = {"ks": [3, 5, 5, 3], "e": [2, 4, 4, 2], "d": [2, 1], "r": 16}


def scaled(fraction: float) -> settings:
    """A share of the active profile's examples (slow commands run fewer); at least 5."""
    n = settings().max_examples
    return settings(max_examples=max(5, int(n * fraction)),
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


# ---------------------------------------------------------------------- the oracle
def outcome(result: tuple[int, str, str]) -> str:
    """``"ok"`` or ``"error"``; fails the test on anything else a user should never see."""
    code, out, err = result
    assert "Traceback" not in out + err, err
    if code == 0:
        return "ok"
    assert code == 2, f"exit {code}: {err}"
    # lines as a terminal shows them: str.splitlines would also split at \x0b, \x1c or
    # \x85, which a file name may hold and a message names
    lines = err.strip().split("\n")
    assert lines, "exit 2 with nothing on stderr"
    assert len(lines) == 1, f"{len(lines)} lines on stderr:\n{err}"
    assert lines[0].startswith("error: "), err
    assert len(lines[0]) > len("error: ") + 5, err
    return "error"


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``folder``: size and modification time."""
    out = {}
    for p in folder.rglob("*"):
        st_ = p.lstat()
        out[str(p.relative_to(folder))] = (st_.st_size if p.is_file() else -1,
                                           st_.st_mtime_ns if p.is_file() else 0)
    return out


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    """A fresh folder per example (``tmp_path`` is shared by all examples of a test)."""
    folder = Path(tempfile.mkdtemp(prefix="nas-fuzz-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def working_dir(folder: Path) -> Iterator[None]:
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


@pytest.fixture(autouse=True)
def _no_shared_state(tmp_path_factory, monkeypatch):
    """No example may touch the repository's database, devices or caches."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("NAS_DB_URL", f"sqlite:///{home}/latency.sqlite")
    monkeypatch.setenv("NAS_CACHE_DIR", str(home / "cache"))
    monkeypatch.setenv("NAS_DEVICES_DIR", str(home / "devices"))


# ---------------------------------------------------------------------- strategies
HUGE = "9" * 5000
DEEP = "[" * 5000 + "]" * 5000
KEYS = ["ks", "e", "d", "r", "space", "arch", "latency_ms", "p10", "p90", "n_runs", "status",
        "env", "device", "format", "extra", "phases", "data", "seed", "name", "threads",
        "op_code", "study_name", "worker_id", "directions", "user_attr", "files", "sha256"]
WORDS = ["tiny", "ofa_mbv3", "cpu-1t", "ok", "failed", "nas.supernet", "nas.export/1",
         "..", "%41", "we?ird", "a b", "ünï", "", "\x00", "\n", "NaN", "1e999"]

leaves = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([3, 5, 7, 2, 4, 6, 16, 24, 1, 0, -1]),
    st.text(max_size=12), st.sampled_from(WORDS),
)
json_values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=6),
    max_leaves=24,
)


def _dumps(v: Any) -> str:
    return json.dumps(v)  # NaN and Infinity as Python writes them, which json.loads reads


small_ints = st.sampled_from([3, 5, 7, 2, 4, 6, 1, 0, -1, 8, 10**30])
arch_like = st.fixed_dictionaries(
    {},
    optional={
        "ks": st.lists(small_ints, max_size=6) | json_values,
        "e": st.lists(small_ints, max_size=6) | json_values,
        "d": st.lists(small_ints, max_size=3) | json_values,
        "r": st.sampled_from([16, 24, 0, -16, 16.0, 10**400]) | json_values,
        "space": st.sampled_from(["tiny", "ofa_mbv3", "x"]),
        "wid": st.none(),
    },
) | st.builds(lambda k, v: {**GOOD_ARCH, k: v}, st.sampled_from(["ks", "e", "d", "r"]),
              json_values) | st.just(GOOD_ARCH)
arch_texts = st.one_of(
    arch_like.map(_dumps), json_values.map(_dumps), st.text(max_size=40),
    st.sampled_from([DEEP, '{"r": ' + HUGE + "}", "@", "@/nonexistent", "@.", "", " ",
                     '{"ks": [3, 3, 3, 3], "e": [2, 2, 2, 2], "d": [1, 1], "r": NaN}']),
)
SPECIAL_FILES = [
    b"", b"\xff\xfe\x00\x00", b"\xef\xbb\xbf{}", b"\x00" * 64, b"\x80abc", DEEP.encode(),
    ("[" + HUGE + "]").encode(), b"!!python/object/apply:os.system ['true']",
    b"a: &a [1]\nb: *a\n", b"- - - - -\n", b":\n", b"{" * 5000, b"key: .nan\n", b"%YAML 9.9\n",
]
file_bytes = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: _dumps(v).encode()),
    st.lists(json_values.map(_dumps) | arch_like.map(_dumps), max_size=6)
    .map(lambda rows: "\n".join(rows).encode()),
    st.dictionaries(st.sampled_from(KEYS), json_values, max_size=6)
    .map(lambda d: yaml.safe_dump(d, allow_unicode=True).encode()),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from(SPECIAL_FILES),
)


# ---------------------------------------------------------------------- arguments
@given(text=arch_texts, space=st.sampled_from(["tiny", "cifar_mbv3", "nope", ""]))
@example(text=DEEP, space="tiny")
@example(text=_dumps(GOOD_ARCH), space="tiny")
def test_arch_text(run_nas: Run, text: str, space: str) -> None:
    outcome(run_nas(["arch", "info", "--space", space, "--arch", text, "--json"]))


@given(seed=st.integers(min_value=-(2**70), max_value=2**70) | st.sampled_from(
    [0, 2**32 - 1, 2**32, -1]), n=st.integers(min_value=-(2**40), max_value=2**40)
    | st.integers(min_value=0, max_value=900))
def test_seed_and_count(run_nas: Run, seed: int, n: int) -> None:
    result = run_nas(["spaces", "sample", "tiny", "--seed", str(seed), "--n", str(n),
                      "--jsonl"])
    if outcome(result) == "ok":
        assert 0 <= seed < 2**32
        assert 1 <= n <= 800
        assert len(result[1].strip().splitlines()) == n


@given(seed=st.integers(min_value=-(2**70), max_value=-1)
       | st.integers(min_value=2**32, max_value=2**70))
@settings(max_examples=10)
def test_seed_out_of_range_fails_before_work(run_nas: Run, tmp_path: Path, seed: int) -> None:
    # commands that would start Ray, time subnets or write: the seed is refused first
    before = snapshot(tmp_path)
    for argv in (["search", "--space", "tiny"],
                 ["latency", "measure", "--device", "cpu-1t", "--space", "tiny",
                  "--db", str(tmp_path / "l.sqlite")],
                 ["supernet", "init", "-s", "tiny", "--out", str(tmp_path / "c.safetensors")]):
        assert outcome(run_nas([*argv, "--seed", str(seed)])) == "error"
    assert snapshot(tmp_path) == before


proxy_specs = st.one_of(
    st.text(max_size=30),
    st.builds(lambda n, k, v: f"{n}:{k}={v}", st.sampled_from(["macs", "params", "x", ""]),
              st.text(max_size=6), st.text(max_size=6) | st.sampled_from(["nan", "1e999",
                                                                           HUGE, "-1"])),
)


@given(spec=proxy_specs)
@scaled(0.5)
def test_proxy_spec(run_nas: Run, tmp_path: Path, spec: str) -> None:
    archs = tmp_path / "a.jsonl"
    archs.write_text(_dumps(GOOD_ARCH) + "\n")
    outcome(run_nas(["proxies", "eval", "-s", "tiny", "-f", str(archs), "-p", spec,
                     "--no-cache", "--json"]))


# ---------------------------------------------------------------------- paths
segments = st.sampled_from(["a", "we?ird", "%41", "..", ".", "sp ace", "ünï©", "#x", "-x",
                            "a&b", "*", "~", "x.sqlite", "e"]) | st.text(
    # no line breaks: messages name the path as given, and nas/cli.py prints the message as
    # is (test_cli_bad_input.py::test_line_break_in_a_path_is_still_one_line tracks that)
    alphabet=st.characters(exclude_characters="/\x00\n\r", codec="utf-8"), min_size=1,
    max_size=8)
# "~" first would be expanded to $HOME, out of the scratch folder
rel_paths = st.lists(segments, min_size=1, max_size=4).map("/".join).filter(
    lambda p: not p.startswith("~"))
DEPTH = 4  # ".." segments never climb out of the scratch folder


@contextlib.contextmanager
def deep_work() -> Iterator[tuple[Path, Path]]:
    with scratch() as base:
        work = base.joinpath(*[f"l{i}" for i in range(DEPTH)], "work")
        work.mkdir(parents=True)
        with working_dir(work):
            yield base, work


def _new_entries(base: Path, before: dict[str, Any]) -> set[str]:
    return set(snapshot(base)) - set(before)


def _only_made(base: Path, before: dict[str, Any], target: Path) -> None:
    """What the command created is ``target`` (with its contents) and the folders above it:
    no temporary file or folder is left beside it."""
    allowed = {target, *target.parents}
    stray = [p for p in _new_entries(base, before)
             if not ({base / p, *(base / p).parents} & {target} or base / p in allowed)]
    assert not stray, stray


@given(path=rel_paths)
@scaled(0.5)
def test_db_path(run_nas: Run, path: str) -> None:
    """``--db PATH``: the database is that file, or the command fails and creates nothing."""
    blank = not path.strip()  # a blank --db means the default database
    with deep_work() as (base, work):
        target = Path(os.path.normpath(work / path))
        if not target.parent.exists() and base in target.parents:
            target.parent.mkdir(parents=True)  # half the time the folder exists
        before = snapshot(base)
        result = run_nas(["latency", "export", "--out", str(work / "m.csv"), "--db", path])
        if outcome(result) == "ok" and not blank:
            assert target.is_file(), (path, sorted(_new_entries(base, before)))
            # the message names the real file (rich wraps long lines at spaces and drops
            # control characters)
            def shown(text: str) -> str:
                return "".join(c for c in text if c.isprintable() and not c.isspace())

            assert shown(str(target)) in shown(result[1])
            assert _new_entries(base, before) <= {
                str(p.relative_to(base)) for p in (target, work / "m.csv")
            } | {str(target.relative_to(base)) + s for s in ("-wal", "-shm", "-journal")}
        elif not blank:
            assert snapshot(base) == before


@given(path=rel_paths)
@scaled(0.25)
def test_checkpoint_out_path(run_nas: Run, path: str) -> None:
    with deep_work() as (base, work):
        before = snapshot(base)
        result = run_nas(["supernet", "init", "-s", "tiny", "--out", path, "--no-calibrate"])
        if outcome(result) == "ok":
            target = Path(os.path.normpath(work / path))
            assert target.is_file()
            _only_made(base, before, target)
        else:
            assert snapshot(base) == before


@given(path=rel_paths, overwrite=st.booleans())
@scaled(0.25)
def test_export_out_path(run_nas: Run, path: str, overwrite: bool) -> None:
    with deep_work() as (base, work):
        (work / "keep.txt").write_text("mine")
        before = snapshot(base)
        result = run_nas(["export", "-s", "tiny", "-c", str(shipped_supernet()), "--arch",
                          _dumps(GOOD_ARCH), "--out", path,
                          *(["--overwrite"] if overwrite else [])])
        if outcome(result) == "ok":
            target = Path(os.path.normpath(work / path))
            assert sorted(p.name for p in target.iterdir()) == [
                "manifest.json", "model.onnx", "weights.safetensors"]
            _only_made(base, before, target)
            assert (work / "keep.txt").read_text() == "mine"
        else:
            assert snapshot(base) == before


# ---------------------------------------------------------------------- file readers
def _file_case(run_nas: Run, data: bytes, name: str, argv: Callable[[Path, Path], list[str]]
               ) -> tuple[str, Path, dict[str, Any]]:
    with scratch() as folder:
        f = folder / name
        f.write_bytes(data)
        before = snapshot(folder)
        got = outcome(run_nas(argv(f, folder)))
        after = snapshot(folder)
        if got == "error":
            assert after == before
        assert f.read_bytes() == data  # a reader never changes its input
        return got, folder, after


@given(data=file_bytes)
def test_arch_file_for_arch_option(run_nas: Run, data: bytes) -> None:
    _file_case(run_nas, data, "a.json",
               lambda f, _: ["arch", "info", "-s", "tiny", "--arch", f"@{f}", "--json"])


@given(data=file_bytes)
@scaled(0.75)
def test_arch_file_list(run_nas: Run, data: bytes) -> None:
    _file_case(run_nas, data, "a.jsonl",
               lambda f, _: ["proxies", "eval", "-s", "tiny", "-f", str(f), "-p", "macs",
                             "--no-cache", "--json"])


@given(data=file_bytes, command=st.sampled_from(["train", "search"]))
@example(data=b"\xff\xfe\x80", command="train")
@example(data=b"space: tiny\nseed: -5\n", command="search")
def test_config_file(run_nas: Run, data: bytes, command: str) -> None:
    def argv(f: Path, folder: Path) -> list[str]:
        if command == "train":
            return ["train", "--config", str(f), "--out", str(folder / "run")]
        # --n-trials 0 fails validation, so a config that happens to be valid starts nothing
        return ["search", "--config", str(f), "--n-trials", "0",
                "--storage", str(folder / "s.journal")]

    got, _, _ = _file_case(run_nas, data, "c.yaml", argv)
    assert got == "error"


@given(data=file_bytes)
def test_device_profile_file(run_nas: Run, tmp_path: Path, monkeypatch, data: bytes) -> None:
    folder = tmp_path / "devices"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    (folder / "fuzzed.yaml").write_bytes(data)
    monkeypatch.setenv("NAS_DEVICES_DIR", str(folder))
    before = snapshot(folder)
    for argv in (["devices", "show", "fuzzed", "--json"], ["devices", "list", "--json"]):
        outcome(run_nas(argv))
    assert snapshot(folder) == before


import_rows = st.lists(
    st.fixed_dictionaries({"arch": arch_like | json_values},
                          optional={k: json_values | st.floats() for k in
                                    ("latency_ms", "p10", "p90", "n_runs", "status", "env",
                                     "device", "space", "error")}),
    max_size=4,
)


def _as_csv(rows: list[dict[str, Any]]) -> bytes:
    import csv
    import io

    cols = sorted({k for r in rows for k in r})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    for r in rows:
        w.writerow({k: v if isinstance(v, str) else _dumps(v) for k, v in r.items()})
    return buf.getvalue().encode()


@given(data=file_bytes | import_rows.map(lambda rs: "\n".join(map(_dumps, rs)).encode())
       | import_rows.map(_as_csv), suffix=st.sampled_from([".jsonl", ".csv"]))
def test_latency_import(run_nas: Run, data: bytes, suffix: str) -> None:
    got, _, after = _file_case(
        run_nas, data, f"m{suffix}",
        lambda f, folder: ["latency", "import", str(f), "--space", "tiny", "--device",
                           "cpu-1t", "--db", str(folder / "lat.sqlite"), "--json"])
    if got == "error":
        assert "lat.sqlite" not in after  # the database was not even created


def _safetensors(meta: dict[str, str], tail: bytes = b"") -> bytes:
    header = json.dumps({"__metadata__": meta}).encode()
    return struct.pack("<Q", len(header)) + header + tail


checkpoints = st.one_of(
    file_bytes,
    st.dictionaries(st.sampled_from(["format", "version", "space", "extra"]) | st.text(
        max_size=5), st.sampled_from(["nas.supernet", "1", "tiny", "{}", "[]", "{", "",
                                      DEEP, HUGE]) | st.text(max_size=10), max_size=5)
    .map(_safetensors),
    st.binary(max_size=16).map(lambda b: struct.pack("<Q", 2**63) + b),
)


@given(data=checkpoints)
@scaled(0.75)
def test_checkpoint_file(run_nas: Run, data: bytes) -> None:
    _file_case(run_nas, data, "ck.safetensors",
               lambda f, _: ["supernet", "info", str(f), "--json"])
    got, _, _ = _file_case(
        run_nas, data, "ck.safetensors",
        lambda f, folder: ["export", "-s", "tiny", "-c", str(f), "--arch", _dumps(GOOD_ARCH),
                           "--out", str(folder / "e")])
    assert got == "error"  # none of these is a whole supernet


journal_lines = st.lists(
    st.one_of(
        st.fixed_dictionaries({"op_code": st.integers(min_value=-1, max_value=12)},
                              optional={"worker_id": st.text(max_size=4),
                                        "study_name": st.just("s") | st.text(max_size=4),
                                        "study_id": st.integers(-1, 3),
                                        "trial_id": st.integers(-1, 3),
                                        "directions": st.lists(st.integers(-1, 3), max_size=2),
                                        "user_attr": st.dictionaries(st.text(max_size=4),
                                                                     json_values, max_size=2),
                                        "state": st.integers(-1, 6),
                                        "values": json_values}).map(_dumps),
        json_values.map(_dumps),
        st.text(max_size=20),
    ),
    max_size=6,
).map(lambda lines: ("\n".join(lines) + "\n").encode())


@given(data=journal_lines | file_bytes)
def test_journal_file(run_nas: Run, data: bytes) -> None:
    for study in ([], ["--study", "s"]):
        _file_case(run_nas, data, "x.journal",
                   lambda f, _, study=study: ["results", "--storage", str(f), *study, "--json"])


@pytest.fixture(scope="module")
def good_export(tmp_path_factory) -> Path:
    from nas.export import export_subnet
    from nas.supernet import load_supernet

    out = tmp_path_factory.mktemp("export") / "e"
    export_subnet(load_supernet(shipped_supernet()), GOOD_ARCH, out)
    return out


manifest_edits = st.lists(
    st.tuples(st.sampled_from(["format", "space", "arch", "resolution", "files",
                               "verification", "arch_hash", "x"]), json_values | arch_like),
    min_size=1, max_size=3,
)


@given(edits=manifest_edits | st.just([]), raw=st.none() | file_bytes)
@scaled(0.5)
def test_export_manifest(run_nas: Run, good_export: Path, edits: list[tuple[str, Any]],
                         raw: bytes | None) -> None:
    with scratch() as base:
        folder = base / "e"
        shutil.copytree(good_export, folder)
        if raw is not None:
            (folder / "manifest.json").write_bytes(raw)
        else:
            manifest = json.loads((folder / "manifest.json").read_text())
            manifest.update(dict(edits))
            (folder / "manifest.json").write_text(_dumps(manifest))
        before = snapshot(base)
        got = outcome(run_nas(["verify", str(folder), "--json"]))
        if raw is None and not edits:
            assert got == "ok"
        assert snapshot(base) == before


@given(prefix=st.sampled_from(["", "", "sqlite:///", "sqlite://", "sqlite:////", "x://",
                               "file:", "SQLITE:///", "sqlite+pysqlite:///"]),
       path=rel_paths, study=st.none() | st.text(max_size=8))
@scaled(0.5)
def test_storage_option(run_nas: Run, prefix: str, path: str, study: str | None) -> None:
    """``nas results --storage``: reading a search never creates a file or folder."""
    with deep_work() as (base, _):
        before = snapshot(base)
        outcome(run_nas(["results", "--storage", prefix + path,
                         *(["--study", study] if study is not None else []), "--json"]))
        assert snapshot(base) == before


ODD_VALUES = ["nan", "NaN", "inf", "-inf", "-1", "0", "1", "1e999", "-1e999", "1e-320", HUGE,
              "-" + HUGE, "", " ", "abc", "%41", "..", "we?ird", "ünï", "0x10", "1_000"]
# Commands that do no work (no Ray, no timing, no training) whatever the value; each value
# goes where {v} is. {db} is a fresh database path, {ck} the shipped supernet.
OPTION_CASES = [
    ["spaces", "show", "{v}", "--json"],
    ["spaces", "sample", "{v}", "--jsonl"],
    ["spaces", "sample", "tiny", "--n", "{v}", "--jsonl"],
    ["devices", "show", "{v}", "--json"],
    ["latency", "fit", "--device", "cpu-1t", "--space", "tiny", "--db", "{db}",
     "--holdout", "{v}"],
    ["latency", "fit", "--device", "{v}", "--space", "tiny", "--db", "{db}"],
    ["latency", "predict", "--device", "cpu-1t", "--space", "tiny", "--db", "{db}",
     "--arch", "{v}"],
    ["latency", "export", "--out", "{tmp}/m.csv", "--db", "{db}", "--device", "{v}"],
    ["proxies", "eval", "-s", "tiny", "-f", "{archs}", "-p", "macs", "--no-cache",
     "--val-limit", "{v}"],
    ["proxies", "eval", "-s", "tiny", "-f", "{archs}", "-p", "{v}", "--no-cache"],
    ["proxies", "eval", "-s", "tiny", "-f", "{archs}", "-p", "macs", "--no-cache",
     "--torch-device", "{v}"],
    ["report", "--study", "{v}", "--storage", "{tmp}/none.journal", "--out", "{tmp}/r.html"],
    ["supernet", "info", "{v}"],
    ["verify", "{v}"],
    ["export", "-s", "tiny", "-c", "{ck}", "--arch", _dumps(GOOD_ARCH), "--out", "{tmp}/e",
     "--opset", "{v}"],
    ["export", "-s", "{v}", "-c", "{ck}", "--arch", _dumps(GOOD_ARCH), "--out", "{tmp}/e"],
    ["results", "--study", "{v}", "--storage", "{tmp}/none.journal"],
    ["search", "--space", "tiny", "--seed", "{v}", "--n-trials", "0"],
    ["search", "--space", "{v}", "--n-trials", "0"],
    ["search", "--space", "tiny", "--workers", "{v}", "--n-trials", "0"],
    ["latency", "measure", "--device", "cpu-1t", "--space", "tiny", "--db", "{db}",
     "--n", "{v}", "--seed", "-1"],
]


@given(case=st.sampled_from(OPTION_CASES),
       value=st.sampled_from(ODD_VALUES) | st.text(max_size=10))
@scaled(1.0)
def test_option_values(run_nas: Run, case: list[str], value: str) -> None:
    with scratch() as tmp:
        archs = tmp / "a.jsonl"
        archs.write_text(_dumps(GOOD_ARCH) + "\n")
        argv = [a.replace("{v}", value).replace("{db}", str(tmp / "l.sqlite"))
                .replace("{tmp}", str(tmp)).replace("{archs}", str(archs))
                .replace("{ck}", str(shipped_supernet())) for a in case]
        before = snapshot(tmp)
        if outcome(run_nas(argv)) == "error":
            # the latency database is the commands' store, not their output: opening it
            # creates it (an empty one) before, e.g., `latency fit` finds no measurements
            after = {k: v for k, v in snapshot(tmp).items() if not k.startswith("l.sqlite")}
            assert after == before
