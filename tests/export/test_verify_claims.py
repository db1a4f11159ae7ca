"""`nas verify` re-derives what a manifest claims (issue 24, item 6).

Before, a manifest edited to say `"macs": 1` verified, and so did an export whose
`weights.safetensors` was a symlink to another export's: the hashes matched, and nothing
else was checked. Now every claim is re-derived from the architecture and a file linked from
outside the folder is refused, each in one `error:` line, exit 2.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from expect import one_error

from nas._data import shipped_supernet


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nas.export import export_subnet
    from nas.supernet import load_supernet

    ck = shipped_supernet()
    net = load_supernet(ck)
    out = tmp_path_factory.mktemp("exp") / "A"
    export_subnet(net, net.space.middle(), out, checkpoint=ck)
    return out


def edited(export: Path, where: Path, **changes: Any) -> Path:
    folder = where / "edited"
    shutil.copytree(export, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(changes)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_the_export_as_written_verifies(run_nas, export):
    code, _, err = run_nas(["verify", str(export)])
    assert code == 0, err


@pytest.mark.parametrize("key, value", [
    ("macs", 1), ("params", 10), ("arch_hash", "0123456789ab"), ("resolution", 12),
    ("num_classes", 1000),
])
def test_an_edited_claim_is_refused(run_nas, export, tmp_path, key, value):
    folder = edited(export, tmp_path, **{key: value})
    one_error(run_nas(["verify", str(folder)]), key)


def test_edited_shapes_are_refused(run_nas, export, tmp_path):
    manifest = json.loads((export / "manifest.json").read_text())
    inputs = [{**manifest["inputs"][0], "shape": ["batch", 3, 224, 224]}]
    one_error(run_nas(["verify", str(edited(export, tmp_path, inputs=inputs))]), "inputs")


def test_a_file_size_that_does_not_match_is_refused(run_nas, export, tmp_path):
    manifest = json.loads((export / "manifest.json").read_text())
    files = {k: dict(v) for k, v in manifest["files"].items()}
    files["model.onnx"]["bytes"] += 1
    one_error(run_nas(["verify", str(edited(export, tmp_path, files=files))]), "bytes")


def test_weights_linked_from_another_export_are_refused(run_nas, export, tmp_path):
    copy = tmp_path / "B"
    shutil.copytree(export, copy)
    (copy / "weights.safetensors").unlink()
    (copy / "weights.safetensors").symlink_to(export / "weights.safetensors")
    one_error(run_nas(["verify", str(copy)]), "weights.safetensors", "symlink")
    # a link inside the folder is the folder's own file
    inside = tmp_path / "C"
    shutil.copytree(export, inside)
    (inside / "weights.safetensors").rename(inside / "w.bin")
    (inside / "weights.safetensors").symlink_to("w.bin")
    code, _, err = run_nas(["verify", str(inside)])
    assert code == 0, err
