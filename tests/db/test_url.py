"""A database path is a path: every character kept, the file written where it says.

Only a value with a scheme (``xxx://``) is a URL. Before, a path was pasted after
``sqlite:///``: ``?`` started a query string (``/t/we?ird/lat.sqlite`` wrote ``/t/we``) and
``%41`` was decoded, so errors named another file.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from nas.db import LatencyDB, resolve_db_url
from nas.errors import DatabaseError

ODD_FOLDERS = ["we?ird", "a%41b", "sp ace", "h#sh", "ünï©ødé", "at@host:1", "semi;colon"]


@pytest.mark.parametrize("folder", ODD_FOLDERS)
def test_sqlite_file_is_created_exactly_at_the_path(tmp_path, folder):
    (tmp_path / folder).mkdir()
    path = tmp_path / folder / "lat.sqlite"
    with LatencyDB(str(path)) as db:
        assert db.schema_version() >= 1
        assert db.display_url == str(path)
    # the file is where the path says, and nothing else was created
    assert path.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder]
    assert sqlite3.connect(path).execute("select count(*) from schema_version").fetchone()


def test_question_mark_does_not_write_to_the_prefix(tmp_path):
    (tmp_path / "we?ird").mkdir()
    LatencyDB(str(tmp_path / "we?ird" / "lat.sqlite")).close()
    assert not (tmp_path / "we").exists()
    assert (tmp_path / "we?ird" / "lat.sqlite").is_file()


def test_error_names_the_real_file(tmp_path):
    missing = tmp_path / "no%41such" / "lat.sqlite"
    with pytest.raises(DatabaseError) as err:
        LatencyDB(str(missing))
    assert str(missing) in str(err.value)
    assert "noAsuch" not in str(err.value)
    assert not (tmp_path / "noAsuch").exists()


def test_path_round_trips_through_the_url(tmp_path):
    from sqlalchemy.engine import make_url

    path = tmp_path / "we?ird" / "a%41 b#c.sqlite"
    url = resolve_db_url(str(path))
    assert url.startswith("sqlite:///")
    assert make_url(url).database == str(path)
    assert resolve_db_url(path) == url  # a PathLike is a path too


def test_urls_stay_urls(tmp_path):
    assert resolve_db_url("sqlite:///:memory:") == "sqlite:///:memory:"
    pg = "postgresql+psycopg2://me:pw@db.example/nas"
    assert resolve_db_url(f"  {pg} ") == pg
    url = resolve_db_url(f"sqlite:///{tmp_path}/x.sqlite")
    assert url == f"sqlite:///{tmp_path}/x.sqlite"


def test_relative_path_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d?x").mkdir()
    LatencyDB("d?x/lat.sqlite").close()
    assert (tmp_path / "d?x" / "lat.sqlite").is_file()


def test_cli_db_option_writes_where_it_says(tmp_path, run_nas):
    folder = tmp_path / "we?ird"
    folder.mkdir()
    db = folder / "lat.sqlite"
    rows = tmp_path / "m.jsonl"
    rows.write_text('{"arch": {"ks": [3, 3, 3, 3], "e": [2, 2, 2, 2], "d": [2, 2], "r": 16}, '
                    '"latency_ms": 0.05}\n')
    code, out, err = run_nas(["latency", "import", str(rows), "--device", "cpu-1t",
                              "--space", "tiny", "--db", str(db)])
    assert code == 0, err
    assert db.is_file()
    assert str(db) in out
    assert not Path(str(tmp_path / "we")).exists()
    # a command that only reads names it too, and does not create one at a wrong path
    code, out, err = run_nas(["latency", "export", "--out", str(tmp_path / "m.csv"),
                              "--db", str(db)])
    assert code == 0, err
    assert str(db) in out, err
    code, _, err = run_nas(["latency", "export", "--out", str(tmp_path / "n.csv"),
                            "--db", str(folder / "lat2.sqlite")])
    assert code == 2
    assert "no latency database at" in err
    assert not (folder / "lat2.sqlite").exists()


def test_a_folder_named_tilde_is_not_home(tmp_path, monkeypatch):
    # found by test_fuzz_cli.py: "./~/a" was written to $HOME/a
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "~").mkdir()
    LatencyDB("./~/a.sqlite").close()
    assert (tmp_path / "~" / "a.sqlite").is_file()
    assert not (tmp_path / "home").exists()
    assert resolve_db_url("~/b.sqlite") == resolve_db_url(str(tmp_path / "home" / "b.sqlite"))
