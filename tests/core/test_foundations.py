"""The shared foundations: the plug-in registry, one-line config errors, atomic files, URLs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nas._config import ConfigModel
from nas._io import atomic_path, atomic_write, mask_url, read_text, read_yaml, sha256_file
from nas._registry import Registry
from nas.errors import ConfigError, DataError, UnknownNameError


class _Base:
    name = ""


def test_registry_registers_by_decorator_and_lists_sorted() -> None:
    reg: Registry[type[_Base]] = Registry("widget")

    @reg.register
    class B(_Base):
        name = "b"

    @reg.register
    class A(_Base):
        name = "a"

    assert reg.names() == ["a", "b"]
    assert list(reg) == ["a", "b"]
    assert len(reg) == 2
    assert reg.get("b") is B
    assert "a" in reg
    assert "c" not in reg
    assert reg.names("b*") == ["b"]


def test_registry_refuses_duplicates_and_nameless_and_lists_known_on_unknown() -> None:
    reg: Registry[type[_Base]] = Registry("widget")

    @reg.register
    class A(_Base):
        name = "a"

    with pytest.raises(ConfigError, match="widget 'a' is already registered"):
        reg.register(type("A2", (_Base,), {"name": "a"}))
    with pytest.raises(ConfigError, match="has no 'name'"):
        reg.register(type("Nameless", (_Base,), {}))
    with pytest.raises(UnknownNameError, match=r"unknown widget 'zz'; known: a"):
        reg.get("zz")
    reg.unregister("a")
    assert reg.names() == []


def test_registry_imports_its_builtins_on_first_use() -> None:
    reg: Registry[object] = Registry("thing", builtins=["nas._registry_test_builtin_missing"])
    with pytest.raises(ModuleNotFoundError):
        reg.names()


def test_a_registry_looked_up_by_two_threads_at_once_is_never_seen_empty(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two first lookups at once (two requests to the service): the second waits for the
    built-ins the first is importing, rather than finding no plug-in at all."""
    import sys
    import threading

    reg: Registry[object] = Registry("gadget", builtins=["nas_test_slow_builtins"])
    importing, go_on = threading.Event(), threading.Event()
    monkeypatch.setattr(sys.modules[__name__], "_SLOW_REGISTRY", (reg, importing, go_on),
                        raising=False)
    (tmp_path / "nas_test_slow_builtins.py").write_text(
        "import sys\n"
        f"reg, importing, go_on = sys.modules[{__name__!r}]._SLOW_REGISTRY\n"
        "importing.set()\n"
        "go_on.wait(60)\n"
        "class Gadget:\n    name = 'gadget'\n"
        "reg.register(Gadget)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "nas_test_slow_builtins", raising=False)
    first: list[object] = []
    loader = threading.Thread(target=lambda: first.append(reg.get("gadget")))
    loader.start()
    assert importing.wait(60)
    # the second lookup arrives while the first is inside the import; the import finishes
    # half a second later, and the second must wait for it
    threading.Timer(0.5, go_on.set).start()
    assert reg.get("gadget").name == "gadget"  # type: ignore[attr-defined]
    loader.join(60)
    assert first == [reg.get("gadget")]


class _Cfg(ConfigModel):
    what = "widget config"
    lr: float = 0.1
    epochs: int = 3


@pytest.mark.parametrize(("raw", "message"), [
    ({"lr": float("nan")}, "f.yaml: lr = nan: Input should be a finite number"),
    ({"epochs": "many"}, "f.yaml: epochs = 'many': Input should be a valid integer"),
    ({"colour": "red"}, "f.yaml: colour: unknown field"),
])
def test_config_errors_are_one_line_naming_field_and_value(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        _Cfg.from_dict(raw, where="f.yaml")
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_config_files_that_are_not_text_or_yaml_give_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"lr: \xff\xfe\n")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        _Cfg.load(bad)
    bad.write_text("lr: [1,\n")
    with pytest.raises(ConfigError, match="is not valid YAML at line"):
        _Cfg.load(bad)
    with pytest.raises(ConfigError, match="not found"):
        _Cfg.load(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        _Cfg.load(tmp_path)
    good = tmp_path / "good.yaml"
    good.write_text("lr: 0.5\n")
    assert _Cfg.load(good).lr == 0.5
    with pytest.raises(ConfigError, match="must be a mapping"):
        _Cfg.from_dict([1, 2])


def test_atomic_write_replaces_whole_file_and_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.json"
    atomic_write(target, "first")
    atomic_write(target, b"second")
    assert target.read_text() == "second"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "second"
    assert sorted(os.listdir(target.parent)) == ["out.json"]


def test_reads_and_digests_translate_errors_to_the_callers_class(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="dataset not found"):
        read_text(tmp_path / "nope", "dataset", error=DataError)
    f = tmp_path / "x.bin"
    f.write_bytes(b"abc")
    assert sha256_file(f) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    f.write_text("a: 1\n")
    assert read_yaml(f) == {"a": 1}


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://u:secret@127.0.0.1:9/x", "postgresql://u:***@127.0.0.1:9/x"),
    ("postgresql+psycopg2://u@host/db", "postgresql+psycopg2://u@host/db"),
    ("sqlite:////tmp/a@b/x.sqlite", "sqlite:////tmp/a@b/x.sqlite"),
    ("runs/studies/x.journal", "runs/studies/x.journal"),
])
def test_mask_url_hides_only_the_password(url: str, shown: str) -> None:
    assert mask_url(url) == shown
