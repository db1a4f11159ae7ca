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
    assert cls is type(built) and opts == built.opts
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
        assert needle in str(err.value) and "\n" not in str(err.value)


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
    assert "\n" not in msg and needle in msg, msg


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
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
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
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
        assert "constraints" in err
        assert not storage.exists() and not (tmp_path / "runs").exists()
    code, out, err = run_nas([*base, "-C", "macs=5e9"])
    assert code == 0, err
    assert "--resume" not in err and "exists" not in err
    assert storage.exists()
