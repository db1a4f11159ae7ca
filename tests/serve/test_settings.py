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


def test_search_request_schema_lists_the_registered_samplers() -> None:
    from nas.search import SAMPLERS, SearchConfig

    schema = SearchConfig.model_json_schema()["properties"]["sampler"]
    assert schema["enum"] == SAMPLERS.names()
