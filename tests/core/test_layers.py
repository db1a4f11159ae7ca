"""The import contracts of pyproject.toml catch what they are written for.

``lint-imports`` runs, with the repository's contracts, on a copy of the ``nas`` sources into
which one import is planted: a space module reaching the service, or a command module
(``_cli.py``) reaching a package above its own. The copy as it is must pass.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter", reason="import-linter comes with the dev extra")

ROOT = Path(__file__).resolve().parents[2]
LAYERS = "The pipeline's layers: a package imports only the packages below it"


def _copy_sources(dest: Path) -> Path:
    """The ``nas`` package's Python files (and folders) under ``dest``."""

    def not_source(folder: str, names: list[str]) -> list[str]:
        return [n for n in names if n == "__pycache__"
                or (not n.endswith(".py") and not (Path(folder) / n).is_dir())]

    shutil.copytree(ROOT / "nas", dest / "nas", ignore=not_source)
    return dest


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with the repository's contracts, on the package found in ``tree``."""
    exe = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(exe), str(ROOT / "pyproject.toml"), "--no-cache", "--no-logo"],
        cwd=tree, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_the_sources_as_they_are_keep_every_contract(tmp_path: Path) -> None:
    res = _lint_imports(_copy_sources(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"{LAYERS} KEPT" in res.stdout


@pytest.mark.parametrize(("module", "planted", "importer", "imported"), [
    # a library package reaching a layer far above it
    ("space/_space.py", "import nas.serve", "nas.space._space", "nas.serve"),
    # commands reaching a package above their own: the two that nas.cli now wires
    ("space/_cli.py", "import nas.search", "nas.space._cli", "nas.search"),
    ("export/_cli.py", "from nas.search import export_trials", "nas.export._cli", "nas.search"),
    ("train/_cli.py", "from nas.search import export_trials", "nas.train._cli", "nas.search"),
])
def test_an_upward_import_breaks_the_layers(tmp_path: Path, module: str, planted: str,
                                            importer: str, imported: str) -> None:
    tree = _copy_sources(tmp_path)
    source = tree / "nas" / module
    assert source.is_file(), f"{module} is gone: plant the import in another module"
    source.write_text(source.read_text() + f"\n{planted}  # planted by the test\n")

    res = _lint_imports(tree)

    assert res.returncode != 0, res.stdout
    assert f"{LAYERS} BROKEN" in res.stdout
    assert f"- {importer} -> {imported} " in res.stdout
