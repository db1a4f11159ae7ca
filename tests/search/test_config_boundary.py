"""The search config at its boundary: the proxy spec read one way everywhere, names checked
against their registries, strict types and finite bounds, each refusal one line; and through
the CLI, a refused bound leaves nothing in the storage (issue 17, findings 1, 5, 11)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nas.errors import ConfigError, NASError
from nas.proxies import Proxy, get_proxy
from nas.search import SearchConfig


@pytest.mark.parametrize(("spec", "options"), [
    ("predictor:path =/x", {"path": "/x"}),
    ("predictor: path= /x ,kind =gbdt", {"path": "/x", "kind": "gbdt"}),
    ("predictor:path\t=/x,", {"path": "/x"}),
    (" predictor ", {}),
])
def test_a_proxy_spec_is_read_one_way(spec: str, options: dict[str, Any]) -> None:
    """What a checker reads from a spec is what the proxy is built with: a blank around
    ``=`` does not hide an option from one and give it to the other."""
    cls, opts = Proxy.check_spec(spec)
    built = get_proxy(spec)
    assert cls is type(built)
    assert opts == built.opts
    assert {k: opts[k] for k in options} == options


@pytest.mark.parametrize(("spec", "needle"), [
    ("predictor:path=/a,path=/b", "given twice"),
    ("predictor:path =/a, path=/b", "given twice"),
    (":kind=mlp", "no proxy name"),
    ("predictor:pa th=/x", "not a name"),
    ("predictor:=x", "not a name"),
    ("predictor:path", "key=value"),
    ("predictor:colour=red", "no option"),
    ("predictor:kind=magic", "must be one of"),
    ("nope", "unknown proxy"),
])
def test_a_malformed_proxy_spec_is_refused_in_one_line(spec: str, needle: str) -> None:
    for check in (Proxy.check_spec, get_proxy):
        with pytest.raises(NASError) as err:
            check(spec)
        assert needle in str(err.value)
        assert "\n" not in str(err.value)


def test_free_text_options_are_the_ones_that_may_name_files() -> None:
    assert type(get_proxy("predictor")).free_text_options() == ("path",)
    for name in ("inherited", "zico", "synflow", "macs"):
        assert type(get_proxy(name)).free_text_options() == ()


@pytest.mark.parametrize(("change", "needle"), [
    ({"space": "nope"}, "space = 'nope': must be one of"),
    ({"latency_kind": "magic"}, "latency_kind = 'magic': must be one of"),
    ({"objectives": ["latency:../../etc/passwd"]}, "is not a device name"),
    ({"constraints": {"latency:a/b": 1.0}}, "is not a device name"),
    ({"proxy_options": {"val_limit": -5}}, "proxy_options.val_limit = -5"),
    ({"proxy_options": {"val_limit": 5.0}}, "proxy_options.val_limit = 5.0"),
    ({"proxy_options": {"channels_last": "yes"}}, "proxy_options.channels_last = 'yes'"),
    ({"proxy_options": {"cache": "no"}}, "proxy_options.cache = 'no'"),
    ({"proxy_options": {"colour": 1}}, "proxy_options.colour: unknown field"),
    ({"proxy_options": {"device": "cuda;rm"}}, "proxy_options.device"),
    ({"constraints": {"macs": float("inf")}}, "constraints.macs = inf"),
    ({"constraints": {"macs": float("nan")}}, "constraints.macs = nan"),
    ({"constraints": {"macs": "inf"}}, "constraints.macs = 'inf'"),
    ({"constraints": {"params": "1e400"}}, "constraints.params = '1e400'"),
])
def test_what_a_search_cannot_run_is_one_line_naming_the_field(change: dict[str, Any],
                                                                 needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        SearchConfig.from_dict({"space": "tiny", **change})
    msg = str(err.value)
    assert "\n" not in msg, msg
    assert needle in msg, msg


def test_proxy_options_keep_only_what_was_given() -> None:
    """Checked strictly, passed on as given: the proxy context's own defaults still rule."""
    cfg = SearchConfig(space="tiny", proxy_options={"val_limit": 100, "bn_batches": 0})
    assert cfg.proxy_options == {"val_limit": 100, "bn_batches": 0}
    assert SearchConfig(space="tiny").proxy_options == {}


@pytest.mark.parametrize(("spec", "needle"), [
    ("predictor:path =/a,path=/b", "given twice"),
    ("magic", "unknown proxy 'magic'"),
])
def test_a_bad_proxy_spec_stops_the_cli_before_anything_starts(
        run_nas: Any, tmp_path: Path, spec: str, needle: str) -> None:
    storage = tmp_path / "s.journal"
    code, _, err = run_nas(["search", "--space", "tiny", "-O", "accuracy", "--proxy", spec,
                            "--storage", str(storage), "--no-progress"])
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert needle in err, err
    assert not storage.exists()


@pytest.mark.ray
@pytest.mark.slow
def test_an_infinite_bound_is_refused_and_leaves_nothing_behind(
        run_nas: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``-C macs=inf`` is one line and exit 2, before the study exists; the next run with a
    valid bound starts afresh (it is not told to --resume)."""
    monkeypatch.chdir(tmp_path)
    storage = tmp_path / "s.journal"
    base = ["search", "--space", "tiny", "-O", "macs", "-O", "params", "-n", "3",
            "--batch-size", "3", "--storage", str(storage), "--study", "bounds",
            "--no-progress"]
    for bad in ("macs=inf", "macs=nan", "macs=1e400", "params=-inf"):
        code, out, err = run_nas([*base, "-C", bad])
        assert code == 2, (bad, out, err)
        assert len(err.strip().splitlines()) == 1, err
        assert err.startswith("error: "), err
        assert "constraints" in err
        assert not storage.exists()
        assert not (tmp_path / "runs").exists()
    code, out, err = run_nas([*base, "-C", "macs=5e9"])
    assert code == 0, err
    assert "--resume" not in err
    assert "exists" not in err
    assert storage.exists()


# ---------------------------------------------------------------------- engines (issue 23)
RAY_SETTINGS = {"sampler": "nsga2", "workers": 4, "batch_size": 8, "worker_threads": 2,
                "address": "127.0.0.1:6379"}


@pytest.mark.parametrize(("key", "value"), list(RAY_SETTINGS.items()))
def test_a_ray_setting_is_refused_by_the_predictor_engine_in_one_line(key: str,
                                                                       value: Any) -> None:
    """The predictor engine used to ignore these silently; now they are an error naming the
    setting, its value and whose setting it is."""
    with pytest.raises(ConfigError) as err:
        SearchConfig.from_dict({"space": "tiny", "engine": "predictor", key: value})
    assert str(err.value) == (f"search config: {key} = {value!r}: not a setting of engine "
                              "'predictor' (settings of the ray engine)")


def test_a_predictor_setting_is_refused_by_the_ray_engine() -> None:
    with pytest.raises(ConfigError) as err:
        SearchConfig.from_dict({"space": "tiny", "engine": "ray", "generations": 50})
    assert str(err.value) == ("search config: generations = 50: not a setting of engine 'ray' "
                              "(settings of the predictor engine)")


def test_without_an_engine_the_settings_given_choose_it() -> None:
    """A user who sets ``workers`` means Ray, one who sets ``generations`` the predictor
    engine; with neither, the search chooses when it runs. Settings of both are refused."""
    from nas.search import PredictorSearchConfig, RaySearchConfig, choose_engine

    for key, value in RAY_SETTINGS.items():
        for engine in ({}, {"engine": "auto"}):
            cfg = SearchConfig.from_dict({"space": "tiny", key: value, **engine})
            assert type(cfg) is RaySearchConfig
            assert getattr(cfg, key) == value
            assert choose_engine(cfg) == ("ray", f"chosen by {key}")
    cfg = SearchConfig.from_dict({"space": "tiny", "generations": 7, "objectives": ["macs"]})
    assert type(cfg) is PredictorSearchConfig
    assert cfg.generations == 7
    auto = SearchConfig.from_dict({"space": "tiny", "objectives": ["macs"]})
    assert type(auto) is SearchConfig
    assert auto.engine == "auto"
    assert choose_engine(auto)[0] == "predictor"
    assert choose_engine(auto.model_copy(update={"objectives": ["accuracy"]}))[0] == "ray"
    with pytest.raises(ConfigError) as err:
        SearchConfig.from_dict({"space": "tiny", "workers": 2, "generations": 7})
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("search config: workers = 2: not a setting of "
                                              "engine 'predictor', which generations chose")
    with pytest.raises(ConfigError, match="generations = 7: a setting of engine 'predictor', "
                                          "which cannot run this search: proxy 'inherited'"):
        choose_engine(SearchConfig.from_dict({"space": "tiny", "generations": 7}))


def test_the_engine_is_checked_against_the_registry() -> None:
    with pytest.raises(ConfigError) as err:
        SearchConfig.from_dict({"space": "tiny", "engine": "grid"})
    assert str(err.value) == ("search config: engine = 'grid': must be one of auto, predictor, "
                              "ray, got 'grid'")


def test_a_yaml_config_with_a_setting_its_engine_ignores_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "search.yaml"
    path.write_text("space: tiny\nengine: predictor\nobjectives: [macs, params]\n"
                    "generations: 20\nworkers: 2\n")
    with pytest.raises(ConfigError) as err:
        SearchConfig.load(path)
    assert str(err.value) == (f"{path}: workers = 2: not a setting of engine 'predictor' "
                              "(settings of the ray engine)")
    path.write_text("space: tiny\nengine: predictor\nobjectives: [macs, params]\n"
                    "generations: 20\n")
    assert SearchConfig.load(path).model_dump()["generations"] == 20
    with pytest.raises(ConfigError, match="batch_size = 3: not a setting of engine 'predictor'"):
        SearchConfig.load(path, batch_size=3)  # a flag over the file: the same check


def test_an_engines_config_reads_back_as_itself() -> None:
    """What a study stores (``model_dump``) reads back as the same engine's model, the Ray
    worker's copy included."""
    for raw in ({"space": "tiny", "workers": 3}, {"space": "tiny", "generations": 9},
                {"space": "tiny"}):
        cfg = SearchConfig.from_dict(raw)
        again = SearchConfig.model_validate(cfg.model_dump())
        assert type(again) is type(cfg)
        assert again == cfg


def test_a_config_stored_before_the_engines_had_models_still_reads() -> None:
    """Studies stored by earlier versions hold every setting of both engines: they read as
    the engine they name, the other engine's settings dropped; with ``auto``, as the engine
    whose setting was changed from its default (none: still ``auto``)."""
    from nas.search import PredictorSearchConfig, RaySearchConfig

    old = {"space": "tiny", "checkpoint": None, "data": None, "proxy": "inherited",
           "proxy_options": {}, "objectives": ["accuracy", "macs"], "constraints": {},
           "latency_kind": None, "db": None, "sampler": "tpe", "n_trials": 10, "workers": 1,
           "batch_size": 4, "worker_threads": 1, "seed": 0, "study": "old", "storage": None,
           "address": None, "population": None, "engine": "auto", "generations": 300,
           "interpolate": False}
    assert type(SearchConfig.model_validate(old)) is SearchConfig
    cfg = SearchConfig.model_validate({**old, "engine": "predictor", "workers": 2})
    assert type(cfg) is PredictorSearchConfig
    assert cfg.study == "old"
    cfg = SearchConfig.model_validate({**old, "engine": "ray", "generations": 5})
    assert type(cfg) is RaySearchConfig
    cfg = SearchConfig.model_validate({**old, "workers": 2})
    assert type(cfg) is RaySearchConfig
    assert cfg.workers == 2
    cfg = SearchConfig.model_validate({**old, "generations": 50})
    assert type(cfg) is PredictorSearchConfig
    assert cfg.generations == 50


def test_a_registered_engine_joins_the_union_the_help_and_the_refusals() -> None:
    """Engines are a registry: one registered by a test is chosen by its own setting, its
    setting is refused by the other engines, and ``nas search --help`` lists it."""
    import importlib
    import re
    from typing import Literal

    import typer
    from typer.testing import CliRunner

    from nas._config import ConfigModel
    from nas.search import ENGINES, SearchEngine
    from nas.search import _cli as search_cli
    from nas.testing import check_plugin

    class GridOptions(ConfigModel):
        cells: int = 3

    class GridConfig(GridOptions, SearchConfig):
        what = "search config"
        engine: Literal["grid"] = "grid"

    class Grid(SearchEngine):
        name = "grid"
        description = "every subnet of a tiny space, in order (a test engine)"
        Options = GridOptions
        config = GridConfig
        where = "in this process"

    ENGINES.register(Grid)
    try:
        check_plugin(ENGINES, "grid")
        assert type(SearchConfig.from_dict({"space": "tiny", "cells": 5})) is GridConfig
        with pytest.raises(ConfigError) as err:
            SearchConfig.from_dict({"space": "tiny", "engine": "ray", "cells": 5})
        assert str(err.value) == ("search config: cells = 5: not a setting of engine 'ray' "
                                  "(settings of the grid engine)")
        app = typer.Typer()
        importlib.reload(search_cli).register(app)
        res = CliRunner().invoke(app, ["search", "--help"], env={"COLUMNS": "200"})
        text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", res.output).split())
        assert set(ENGINES) == {"grid", "predictor", "ray"}
        for name, engine in ENGINES.items():
            assert f"{name}: {engine.description}" in text, (name, text)
    finally:
        ENGINES.unregister("grid")
        importlib.reload(search_cli)
    assert "grid" not in SearchConfig.model_json_schema()["properties"]["engine"]["enum"]


def test_the_cli_refuses_a_setting_its_engine_ignores_before_anything_starts(
        run_nas: Any, tmp_path: Path) -> None:
    storage = tmp_path / "s.journal"
    code, out, err = run_nas(["search", "--space", "tiny", "-O", "macs", "-O", "params",
                              "--engine", "predictor", "--workers", "4", "--storage",
                              str(storage), "--no-progress"])
    assert code == 2, (out, err)
    assert not out, (out, err)
    assert err.strip() == ("error: search config: workers = 4: not a setting of engine "
                           "'predictor' (settings of the ray engine)")
    assert not storage.exists()


def test_resuming_a_predictor_search_refuses_a_ray_flag(run_nas: Any, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A resumed search takes how it runs from the flags, as its engine has them: a Ray flag
    on a predictor-engine study is refused, not dropped; its own run settings are taken."""
    monkeypatch.chdir(tmp_path)
    base = ["search", "--space", "tiny", "-O", "macs", "-O", "params", "--study", "p",
            "--no-progress"]
    code, _, err = run_nas([*base, "--generations", "5", "-n", "6"])
    assert code == 0, err
    assert "engine: predictor (chosen by generations)" in err, err
    code, _, err = run_nas(["search", "--study", "p", "--resume", "--workers", "3",
                            "--no-progress"])
    assert code == 2, err
    assert err.strip() == ("error: stored config of study 'p': workers = 3: not a setting of "
                           "engine 'predictor' (settings of the ray engine)"), err
    code, out, err = run_nas(["search", "--study", "p", "--resume", "-n", "8", "--json"])
    assert code == 0, err
    import json

    stored = json.loads(out)["config"]
    assert stored["engine"] == "predictor"
    assert stored["n_trials"] == 8
    assert "workers" not in stored
    assert stored["generations"] == 5


@pytest.mark.parametrize("engine", ["predictor", "ray"])
def test_the_engines_pass_the_plugin_contract(engine: str) -> None:
    """Name, description, Options, tags (``nas.testing``), and a config model whose own
    settings are the engine's Options; a model that adds another setting fails the check."""
    from typing import Literal

    from nas.search import ENGINES
    from nas.testing import check_plugin

    check_plugin(ENGINES, engine)
    plugin = ENGINES.get(engine)

    class Sloppy(plugin.config):
        engine: Literal["sloppy"] = "sloppy"
        extra_knob: int = 1

    class SloppyEngine(plugin):
        name = "sloppy"
        config = Sloppy

    ENGINES.register(SloppyEngine)
    try:
        with pytest.raises(AssertionError, match="extra_knob"):
            check_plugin(ENGINES, "sloppy")
    finally:
        ENGINES.unregister("sloppy")
