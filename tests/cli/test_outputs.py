"""One output guard for every command that writes (issue 24, item 1).

Before, `nas report --out` could overwrite the study's own journal with HTML, `nas supernet
init` replaced a trained checkpoint silently, `nas accuracy import-ofa X --out X` replaced its
input, and `nas finetune --out D --work D` trained and only then refused. Now an output that
is, lies inside or holds an input is refused, an existing output needs --overwrite, and all
of it before any work: one `error:` line, exit 2, nothing stored changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from expect import one_error

from nas._data import shipped_supernet
from nas._outputs import check_output, storage_file
from nas.errors import ConfigError

ARCH = json.dumps({"ks": [3, 3, 3, 3], "e": [2, 2, 2, 2], "d": [1, 1], "r": 16})


def digest(path: Path) -> str:
    """What a path holds: a file's bytes, or a folder's names and bytes, hashed."""
    h = hashlib.sha256()
    for p in sorted([path, *path.rglob("*")]) if path.is_dir() else [path]:
        h.update(str(p.relative_to(path.parent)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (tiny, predictor-engine) search's journal."""
    from nas.search import SearchConfig, run_search

    journal = tmp_path_factory.mktemp("study") / "s.journal"
    cfg = SearchConfig.from_dict({"space": "tiny", "objectives": ["macs", "params"],
                                  "engine": "predictor", "generations": 2, "population": 8,
                                  "study": "s", "storage": str(journal)})
    run_search(cfg, progress=False)
    return journal


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An export folder of the shipped tiny supernet's middle subnet."""
    from nas.export import export_subnet
    from nas.supernet import load_supernet

    ck = shipped_supernet()
    net = load_supernet(ck)
    out = tmp_path_factory.mktemp("exp") / "EXP"
    export_subnet(net, net.space.middle(), out, checkpoint=ck)
    return out


def test_report_never_writes_its_own_journal(run_nas, study, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = digest(study)
    one_error(run_nas(["report", "--study", "s", "--storage", str(study), "--out", str(study)]),
              "--out", str(study), "--storage")
    assert digest(study) == before
    # the same file through a symlink is the same file
    (tmp_path / "link.html").symlink_to(study)
    one_error(run_nas(["report", "--study", "s", "--storage", str(study), "--out",
                       "link.html"]), "--storage")
    assert digest(study) == before
    code, _, err = run_nas(["results", "--study", "s", "--storage", str(study)])
    assert code == 0, err


def test_report_replaces_an_existing_file_only_with_overwrite(run_nas, study, tmp_path):
    mine = tmp_path / "mine.html"
    mine.write_text("my notes")
    one_error(run_nas(["report", "--study", "s", "--storage", str(study), "--out", str(mine)]),
              str(mine), "exists", "--overwrite")
    assert mine.read_text() == "my notes"
    code, _, err = run_nas(["report", "--study", "s", "--storage", str(study), "--out",
                            str(mine), "--overwrite"])
    assert code == 0, err
    assert "<html" in mine.read_text()[:2000].lower()


def test_supernet_init_keeps_a_trained_checkpoint(run_nas, tmp_path):
    trained = tmp_path / "trained.safetensors"
    trained.write_bytes(shipped_supernet().read_bytes())
    before = digest(trained)
    one_error(run_nas(["supernet", "init", "--space", "tiny", "--out", str(trained)]),
              "--out", str(trained), "exists", "--overwrite")
    assert digest(trained) == before
    code, _, err = run_nas(["supernet", "init", "--space", "tiny", "--out", str(trained),
                            "--overwrite"])
    assert code == 0, err
    assert digest(trained) != before


def ofa_predictor(path: Path) -> Path:
    """A state dict in the layout of OFA's acc_predictor.pth (random weights)."""
    import torch

    g = torch.Generator().manual_seed(0)
    sd = {}
    for i, (o, n) in enumerate([(400, 128), (400, 400), (400, 400), (1, 400)]):
        sd[f"{2 * i}.weight"] = torch.randn(o, n, generator=g) * 0.05
        sd[f"{2 * i}.bias"] = torch.zeros(o)
    torch.save(sd, path)
    return path


def test_converters_never_replace_their_input(run_nas, tmp_path):
    src = ofa_predictor(tmp_path / "X.pth")
    before = digest(src)
    one_error(run_nas(["accuracy", "import-ofa", str(src), "--out", str(src)]),
              "--out", "SRC")
    assert digest(src) == before
    other = tmp_path / "ours.json"
    other.write_text("{}")
    one_error(run_nas(["accuracy", "import-ofa", str(src), "--out", str(other)]),
              str(other), "exists", "--overwrite")
    assert other.read_text() == "{}"
    code, _, err = run_nas(["accuracy", "import-ofa", str(src), "--out", str(other),
                            "--overwrite"])
    assert code == 0, err
    assert json.loads(other.read_text())["kind"] == "ofa"
    ck = tmp_path / "ck.safetensors"
    ck.write_bytes(shipped_supernet().read_bytes())
    link = tmp_path / "ofa.pth"
    link.symlink_to(ck)  # a link to the input, replaced with --overwrite, is the input
    one_error(run_nas(["supernet", "export-ofa", str(ck), "--out", str(link), "--overwrite"]),
              "CHECKPOINT")
    assert ck.read_bytes() == shipped_supernet().read_bytes()


def test_finetune_refuses_its_outputs_before_training(run_nas, export, tmp_path):
    before = digest(export)
    folder = tmp_path / "D"
    args = ["--epochs", "1", "--no-kd", "--data", "digits", "--train-limit", "64",
            "--batch-size", "32"]
    one_error(run_nas(["finetune", str(export), "--out", str(folder), "--work", str(folder),
                       *args]), "--out", "--work")
    assert not folder.exists()  # nothing trained, nothing written
    one_error(run_nas(["finetune", str(export), "--out", str(export / "sub"), *args]),
              "inside", "source export")
    one_error(run_nas(["finetune", str(export), "--out", str(tmp_path / "F"), "--work",
                       str(export / "w"), *args]), "--work", "inside")
    assert digest(export) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_latency_export_never_writes_the_database(run_nas, tmp_path):
    from nas.db import LatencyDB

    db = tmp_path / "lat.csv"  # a latency database, whatever its name
    with LatencyDB(f"sqlite:///{db}"):
        pass
    before = digest(db)
    one_error(run_nas(["latency", "export", "--out", str(db), "--db", f"sqlite:///{db}"]),
              "--out", "--db")
    assert digest(db) == before


def test_a_cache_is_never_an_input(run_nas, tmp_path):
    archs = tmp_path / "a.jsonl"
    archs.write_text('{"ks": [3, 3, 3, 3], "e": [2, 2, 2, 2], "d": [1, 1], "r": 16}\n')
    before = digest(archs)
    one_error(run_nas(["proxies", "eval", "-s", "tiny", "-f", str(archs), "-p", "macs",
                       "--cache", str(archs)]), "--cache", "--arch-file")
    assert digest(archs) == before


def test_training_never_writes_into_its_data(run_nas, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "x.npz").write_bytes(b"")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"space: tiny\nout: {data / 'run'}\ndata: {{source: {data}}}\n"
                   "phases: [{task: full, epochs: 1, lr: 0.05}]\n")
    one_error(run_nas(["train", "--config", str(cfg)]), "--out", "inside", "data")
    assert sorted(p.name for p in data.iterdir()) == ["x.npz"]


def test_demo_workdir_is_a_folder(run_nas, tmp_path):
    ck = tmp_path / "ck.safetensors"
    ck.write_bytes(b"weights")
    one_error(run_nas(["demo", "--workdir", str(ck)]), "--workdir", "not a folder")
    assert ck.read_bytes() == b"weights"


# ---------------------------------------------------------------------- the guard itself
def test_guard_compares_resolved_paths_and_inodes(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    ck = data / "ck.safetensors"
    ck.write_bytes(b"w")
    os.link(ck, tmp_path / "hard.safetensors")
    with pytest.raises(ConfigError, match="is also --checkpoint"):
        check_output(tmp_path / "hard.safetensors", inputs=[("--checkpoint", ck)],
                     overwrite=True)
    with pytest.raises(ConfigError, match="lies inside --data"):
        check_output(data / "sub" / "x.json", inputs=[("--data", data)])
    with pytest.raises(ConfigError, match="holds --checkpoint"):
        check_output(tmp_path, inputs=[("--checkpoint", ck)], overwrite=True, folder=True)
    with pytest.raises(ConfigError, match="is a folder"):
        check_output(data, overwrite=True)
    with pytest.raises(ConfigError, match="choose a new folder"):
        check_output(data, overwrite=None, folder=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert check_output(empty, folder=True) == empty  # an empty folder is no output yet
    assert check_output(tmp_path / "new" / "x.json", inputs=[("--data", data)]) == \
        tmp_path / "new" / "x.json"


@pytest.mark.parametrize("storage, path", [
    ("runs/s.journal", "runs/s.journal"), ("sqlite:///rel.db", "rel.db"),
    ("sqlite:////abs/x.db", "/abs/x.db"), ("postgresql://u@h/db", None),
    ("sqlite:///:memory:", None), (None, None)])
def test_storage_file(storage, path):
    assert storage_file(storage) == (Path(path) if path else None)
