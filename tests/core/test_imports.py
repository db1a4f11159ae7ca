"""What importing costs: the CLI's help stays free of the heavy packages, and every lazily
exported name is declared once, agreeing with what type checkers see.

The packages are found by scanning ``nas/``, so a new package is covered as soon as it exists.
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import nas

#: packages that take a second or more to import: ``nas --help`` must not wait for them
HEAVY = ("torch", "ray", "optuna", "sklearn", "onnxruntime")

NAS_DIR = Path(nas.__file__).parent
PACKAGES = sorted(p.parent.name for p in NAS_DIR.glob("*/__init__.py")
                  if not p.parent.name.startswith("_"))
LAZY = [p for p in PACKAGES if "lazy_exports(" in (NAS_DIR / p / "__init__.py").read_text()]

#: run in a fresh interpreter: each ``nas ... --help`` given, what it printed and which heavy
#: packages were imported after it (every command's help, when no argument lists are given)
_HELP_PROBE = r"""
import contextlib, io, json, sys
from nas import cli

heavy = json.loads(sys.argv[1])
wanted = json.loads(sys.argv[2])
cli._register_all()
if wanted is None:  # every command and subcommand, from the command tree itself
    import typer
    root = typer.main.get_command(cli.app)
    ctx = root.context_class(root)
    wanted, todo = [], [([], root)]
    while todo:
        path, cmd = todo.pop(0)
        wanted.append(path)
        if hasattr(cmd, "list_commands"):
            todo += [([*path, n], cmd.get_command(ctx, n)) for n in cmd.list_commands(ctx)]
report = []
for path in wanted:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            cli.main([*path, "--help"])
            code = 0
        except SystemExit as exc:
            code = exc.code
    report.append({"argv": path, "code": code, "usage": "Usage: nas" in out.getvalue(),
                   "heavy": [m for m in heavy if m in sys.modules]})
print(json.dumps(report))
"""


def _helps(argvs: list[list[str]] | None) -> list[dict]:
    done = subprocess.run(
        [sys.executable, "-c", _HELP_PROBE, json.dumps(HEAVY), json.dumps(argvs)],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.mark.parametrize("argv", [[], ["spaces"], ["search"], ["latency", "measure"]],
                         ids=lambda a: " ".join(["nas", *a, "--help"]))
def test_help_imports_none_of_the_heavy_packages(argv: list[str]) -> None:
    (run,) = _helps([argv])
    assert run["code"] == 0
    assert run["usage"], run
    assert run["heavy"] == [], f"`nas {' '.join(argv)} --help` imported {run['heavy']}"


def test_no_command_s_help_imports_a_heavy_package() -> None:
    """Every command and subcommand, in one interpreter: the first whose help imports a
    heavy package is named (those after it cannot be told apart)."""
    runs = _helps(None)
    assert len(runs) > 20  # the whole tree was walked
    for run in runs:
        shown = " ".join(["nas", *run["argv"], "--help"])
        assert run["code"] == 0, shown
        assert run["usage"], shown
        assert run["heavy"] == [], f"`{shown}` imported {run['heavy']}"


# ----------------------------------------------------------------------- lazy exports
def _declared(package: str) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """From the source of ``nas/<package>/__init__.py``: module -> names imported under
    ``if TYPE_CHECKING:``, and module -> names given to ``lazy_exports``."""
    tree = ast.parse((NAS_DIR / package / "__init__.py").read_text())
    typed: dict[str, set[str]] = {}
    lazy: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING",
                                                                    "typing.TYPE_CHECKING"):
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom), ast.unparse(stmt)
                assert stmt.module, ast.unparse(stmt)
                typed.setdefault(stmt.module, set()).update(a.asname or a.name
                                                            for a in stmt.names)
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "lazy_exports":
            exports = node.args[1]
            assert isinstance(exports, ast.Dict), "lazy_exports(...) takes a dict literal"
            for key, value in zip(exports.keys, exports.values, strict=True):
                module = ast.literal_eval(key)  # type: ignore[arg-type]
                lazy.setdefault(module, set()).update(ast.literal_eval(value))
    return typed, lazy


def test_packages_are_found() -> None:
    assert {"search", "export", "space", "db"} <= set(PACKAGES)
    assert {"search", "export"} <= set(LAZY)


@pytest.mark.parametrize("package", LAZY)
def test_lazy_exports_agree_with_the_type_checking_imports(package: str) -> None:
    typed, lazy = _declared(package)
    assert typed, f"nas/{package}/__init__.py has no `if TYPE_CHECKING:` imports"
    assert lazy == typed, (
        f"nas/{package}/__init__.py: lazy_exports and the TYPE_CHECKING imports differ; "
        f"only lazy: {_flat(lazy) - _flat(typed)}, only typed: {_flat(typed) - _flat(lazy)}")
    mod = importlib.import_module(f"nas.{package}")
    assert sorted(mod.__all__) == sorted(_names(typed))
    assert len(mod.__all__) == len(set(mod.__all__)), "a name exported twice"
    assert {n for n in dir(mod) if not n.startswith("_")} == set(mod.__all__)


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_resolves(package: str) -> None:
    mod = importlib.import_module(f"nas.{package}")
    assert mod.__all__, f"nas.{package} declares no __all__"
    for name in mod.__all__:
        getattr(mod, name)  # an AttributeError or ImportError names the culprit


def _flat(decl: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {(module, name) for module, names in decl.items() for name in names}


def _names(decl: dict[str, set[str]]) -> list[str]:
    return [name for names in decl.values() for name in names]
