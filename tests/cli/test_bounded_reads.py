"""Bounded reads and checked input (issue 24, item 6).

Before, `--arch @/dev/zero`, `--config /dev/zero` and `--arch-file /dev/zero` read until the
process was killed, `nas spaces sample ofa_mbv3 --n 1000000000` ran until killed, and a YAML
key given twice was taken silently (the last one won). Each is now one `error:` line, exit 2.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from expect import one_error

from nas._io import MAX_READ_BYTES, read_bytes, read_yaml, sha256_file
from nas.errors import ConfigError

ZERO = "/dev/zero"
needs_dev_zero = pytest.mark.skipif(not os.path.exists(ZERO), reason="no /dev/zero here")


ENDLESS = [
    ["latency", "predict", "-d", "cpu-1t", "-s", "tiny", "--arch", f"@{ZERO}"],
    ["latency", "predict", "-d", "cpu-1t", "-s", "tiny", "--arch-file", ZERO],
    ["arch", "info", "-s", "tiny", "--arch", f"@{ZERO}"],
    ["proxies", "eval", "-s", "tiny", "-f", ZERO, "-p", "macs"],
    ["search", "--config", ZERO],
    ["train", "--config", ZERO],
]


@needs_dev_zero
@pytest.mark.parametrize("argv", ENDLESS, ids=["arch@", "arch-file", "arch-info",
                                                "proxies-eval", "search-config",
                                                "train-config"])
def test_an_endless_file_is_one_line(run_nas, tmp_path, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    one_error(run_nas(argv), ZERO, "64 MiB")
    assert list(tmp_path.iterdir()) == []


def test_a_file_over_the_cap_is_refused_unread(tmp_path):
    big = tmp_path / "huge.yaml"
    with open(big, "wb") as fh:  # sparse: no 64 MiB written
        fh.truncate(MAX_READ_BYTES + 1)
    with pytest.raises(ConfigError, match="larger than 64 MiB"):
        read_yaml(big, "search config")
    assert read_bytes(big, limit=MAX_READ_BYTES + 1)[:1] == b"\0"  # a caller may allow more


@needs_dev_zero
def test_a_device_has_no_digest():
    with pytest.raises(ConfigError, match="not a regular file"):
        sha256_file(ZERO, "checkpoint")


def test_counts_have_a_cap(run_nas):
    one_error(run_nas(["spaces", "sample", "ofa_mbv3", "--n", "1000000000"]),
              "--n = 1000000000", "100000")
    one_error(run_nas(["accuracy", "fit", "-s", "tiny", "-c", "x", "--n-train",
                       "1000000000"]), "--n-train", "100000")
    one_error(run_nas(["latency", "kit", "-s", "tiny", "-d", "cpu-1t", "--out", "k", "--n",
                       "1000000000"]), "--n", "10000")


# ---------------------------------------------------------------------- duplicate keys
def test_a_key_given_twice_is_refused(run_nas, tmp_path):
    cfg = tmp_path / "search.yaml"
    cfg.write_text("space: tiny\nn_trials: 5\nobjectives: [macs]\nn_trials: 500\n")
    one_error(run_nas(["search", "--config", str(cfg)]), "n_trials", str(cfg), "twice",
              "lines 2 and 4")
    nested = tmp_path / "nested.yaml"
    nested.write_text("a:\n  b: 1\n  c: {d: 1, d: 2}\n")
    with pytest.raises(ConfigError, match="key 'd' is given twice"):
        read_yaml(nested)


def test_merged_keys_may_be_overridden(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("base: &b {x: 1, y: 2}\nrun:\n  <<: *b\n  y: 3\n")
    assert read_yaml(path) == {"base": {"x": 1, "y": 2}, "run": {"x": 1, "y": 3}}


# ---------------------------------------------------------------------- usage errors
USAGE = [
    (["spaces", "show"], ["missing argument"]),
    (["spaces", "sample", "tiny", "--bogus"], ["no such option", "--bogus"]),
    (["bogus"], ["no such command", "'bogus'"]),
    (["spaces", "sample", "tiny", "--n", "abc"], ["--n = 'abc'", "integer"]),
    (["latency", "bogus"], ["no such command"]),
    (["spaces", "sample", "tiny", "--n"], ["requires an argument"]),
]


@pytest.mark.parametrize("argv, needles", USAGE, ids=lambda a: " ".join(a[:3]))
def test_usage_errors_are_one_line_not_a_box(run_nas, argv, needles):
    line = one_error(run_nas(argv), *needles)
    assert "╭" not in line
    assert "Usage:" not in line


def test_read_bytes_of_a_pipe_stops_at_the_cap(tmp_path):
    # a FIFO with a writer that never ends is a stream like /dev/zero: read to the cap
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    stop = threading.Event()

    def write() -> None:
        try:
            with open(fifo, "wb", buffering=0) as fh:
                while not stop.is_set():
                    fh.write(b"x" * 65536)
        except OSError:  # the reader hung up: what it should do
            return

    t = threading.Thread(target=write, daemon=True)
    t.start()
    try:
        with pytest.raises(ConfigError, match="larger than 1 MiB"):
            read_bytes(Path(fifo), "arch file", limit=1 << 20)
    finally:
        stop.set()
        t.join(timeout=5)
