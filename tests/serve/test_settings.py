"""Service settings: validation, and paths made absolute where they were read."""

from __future__ import annotations

from pathlib import Path

import pytest

from nas.errors import ConfigError
from nas.serve import ServiceSettings


def test_settings_refuse_open_non_loopback_weak_tokens_and_bad_limits() -> None:
    with pytest.raises(ConfigError, match="not loopback: a bearer token is required"):
        ServiceSettings(host="0.0.0.0")
    with pytest.raises(ConfigError, match="at least 16 printable characters"):
        ServiceSettings(token="short")
    with pytest.raises(ConfigError, match="ingress must be one of"):
        ServiceSettings(ingress="magic")
    with pytest.raises(ConfigError, match=r"max_archs must be an integer in \[1, 100000\]"):
        ServiceSettings(max_archs=0)
    assert ServiceSettings(host="0.0.0.0", token="x" * 16).token == "x" * 16


@pytest.mark.parametrize(("change", "line"), [
    ({"port": 0}, "port must be an integer in [1, 65535], got 0"),
    ({"port": True}, "port must be an integer in [1, 65535], got True"),
    ({"max_body_bytes": 10}, "max_body_bytes must be an integer in [1024, 1073741824], got 10"),
    ({"max_searches": "2"}, "max_searches must be an integer in [1, 1024], got '2'"),
    ({"batch_wait_timeout_s": 2.0}, "batch_wait_timeout_s must be in [0, 1] seconds, got 2.0"),
    ({"batch_wait_timeout_s": float("nan")},
     "batch_wait_timeout_s must be in [0, 1] seconds, got nan"),
    ({"host": ""}, "host must be a non-empty string, got ''"),
    ({"ingress": 3}, "ingress must be one of ['direct', 'proxy'], got 3"),
    ({"colour": "red"}, "service settings: colour: unknown field"),
    ({"token": "secret but short"}, "the API token must be at least 16 printable characters "
                                    "without spaces ($NAS_API_TOKEN)"),
])
def test_a_refused_setting_is_one_line_naming_it(change: dict[str, object], line: str) -> None:
    """Validated as every config is (a ConfigModel), in the lines the service always gave:
    the setting, its value and what is allowed; a refused token is never echoed."""
    with pytest.raises(ConfigError) as err:
        ServiceSettings(**change)
    assert str(err.value) == line
    with pytest.raises(ConfigError) as err:  # through from_dict: the same line, with where
        ServiceSettings.from_dict(dict(change), where="serve.yaml")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("serve.yaml: ")
    assert line.split(": ")[-1] in msg
    assert "secret" not in msg


def test_settings_are_frozen_and_changed_copies_are_checked_again() -> None:
    s = ServiceSettings(max_searches=3)
    with pytest.raises(ValueError, match="frozen"):
        s.max_searches = 4
    assert s.with_(max_searches=4).max_searches == 4
    assert s.max_searches == 3
    with pytest.raises(ConfigError, match=r"max_searches must be .*\[1, 1024\], got 0"):
        s.with_(max_searches=0)
    token = ServiceSettings(host="0.0.0.0", token="y" * 20)
    assert "y" * 20 not in repr(token)


def test_the_database_and_the_token_come_from_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``$NAS_DB_URL`` is the default database; ``$NAS_API_TOKEN`` the token, required even
    on loopback once set; without it an open host gets a generated one."""
    from nas.serve import resolve_token

    monkeypatch.setenv("NAS_DB_URL", f"sqlite:///{tmp_path / 'env.sqlite'}")
    assert ServiceSettings().db == f"sqlite:///{tmp_path / 'env.sqlite'}"
    monkeypatch.setenv("NAS_API_TOKEN", "t" * 16)
    assert resolve_token("127.0.0.1") == ("t" * 16, False)
    monkeypatch.delenv("NAS_API_TOKEN")
    assert resolve_token("127.0.0.1") == (None, False)
    token, generated = resolve_token("0.0.0.0")
    assert generated
    assert ServiceSettings(host="0.0.0.0", token=token).token == token


def test_relative_paths_are_resolved_where_they_were_given(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The replica and the search actors run in other processes: a relative path must not
    change meaning there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NAS_DB_URL", raising=False)
    s = ServiceSettings(db="lat.sqlite", state_dir="state", allowed_roots=("data",),
                        storage="s.journal")
    assert s.db == f"sqlite:///{tmp_path / 'lat.sqlite'}"
    assert s.state_dir == str(tmp_path / "state")
    assert s.allowed_roots == (str(tmp_path / "data"),)
    assert s.search_storage == str(tmp_path / "s.journal")
    assert ServiceSettings(state_dir="state").search_storage == \
        f"sqlite:///{tmp_path / 'state' / 'searches.sqlite'}"
    assert s.exports_root == tmp_path / "state" / "exports"


def test_predict_kinds_are_the_registered_predictors() -> None:
    """The request schema lists the kinds by name (for /docs) from the registry, and
    accepts exactly those."""
    from pydantic import ValidationError

    from nas.latency import PREDICTORS
    from nas.serve._schemas import PredictRequest

    kind = PredictRequest.model_json_schema()["properties"]["kind"]
    listed = next(x["enum"] for x in kind["anyOf"] if "enum" in x)
    assert set(listed) == set(PREDICTORS)
    base = {"device": "cpu-1t", "space": "tiny",
            "archs": [{"ks": [3], "e": [3], "d": [1], "r": 32}]}
    for name in PREDICTORS:
        assert PredictRequest(**base, kind=name).kind == name
    with pytest.raises(ValidationError, match="must be one of"):
        PredictRequest(**base, kind="nope")


def test_search_request_schema_lists_the_registered_samplers_and_engines() -> None:
    """POST /searches takes the union of the engines' models: its schema has one member per
    registered engine (and ``auto``), the Ray engine's with the registered samplers."""
    from pydantic import TypeAdapter

    from nas.search import ENGINES, SAMPLERS, RaySearchConfig, search_config_type

    schema = RaySearchConfig.model_json_schema()["properties"]["sampler"]
    assert schema["enum"] == SAMPLERS.names()
    body = TypeAdapter(search_config_type()).json_schema()
    members = {body["$defs"][m["$ref"].rsplit("/", 1)[1]]["title"] for m in body["oneOf"]}
    assert members == {"SearchConfig", *(e.config.__name__ for _, e in ENGINES.items())}
