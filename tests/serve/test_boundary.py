"""What a request may name, checked at the boundary: every path a search config holds (the
checkpoint, the data, each free-text proxy option as the one spec parser reads it) against
``--allow-root`` with symlinks resolved and no oracle in the errors; NaN and infinities
refused in a 422 that is valid JSON; configs the service could not run refused before
anything starts (issue 17, findings 1, 3, 11, 12)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import requests

from nas.space import get_space

pytestmark = pytest.mark.ray


def _config(env: dict[str, Any], **kw: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "space": "tiny", "checkpoint": env["checkpoint"], "data": "digits",
        "proxy": "inherited", "proxy_options": {"val_limit": 100, "bn_batches": 1},
        "objectives": ["accuracy", "latency:cpu-1t"], "n_trials": 4, "workers": 1,
        "batch_size": 2, "seed": 0, "study": "refused",
    }
    cfg.update(kw)
    return cfg


def _strict_json(text: str) -> Any:
    """``text`` as JSON, refusing NaN and infinities (which are not JSON)."""
    def refuse(name: str) -> Any:
        raise ValueError(f"{name} in a response body")

    return json.loads(text, parse_constant=refuse)


def _refused(r: requests.Response, loc: list[Any]) -> str:
    """The message of the 422 entry at ``loc``; fails unless ``r`` is that 422."""
    assert r.status_code == 422, (r.status_code, r.text[:500])
    detail = _strict_json(r.text)["detail"]
    hit = [e for e in detail if e["loc"] == loc]
    assert hit, detail
    return str(hit[0]["msg"])


# ---------------------------------------------------------------------- finding 1
@pytest.mark.parametrize("spec", [
    "predictor:path =/etc/passwd",
    "predictor:path= /etc/passwd",
    "predictor: path=/etc/passwd",
    "predictor:path\t=/etc/passwd",
    "predictor:kind=mlp, path =/etc/passwd",
    "predictor:path=ALLOWED/tiny.safetensors,path =/etc/passwd",
    "predictor:path=ALLOWED/../../../../../etc/passwd",
])
def test_every_spelling_of_a_proxy_path_is_checked(service: Any, service_env: dict[str, Any],
                                                   spec: str) -> None:
    """The service reads the proxy spec with the parser the workers use: a blank around
    ``=`` or a repeated key does not get ``/etc/passwd`` past ``--allow-root``."""
    cfg = _config(service_env, proxy=spec.replace("ALLOWED", str(service_env["allowed"])),
                  objectives=["accuracy"])
    r = requests.post(f"{service.url}/searches", json=cfg, timeout=60)
    msg = _refused(r, ["body", "proxy"])
    assert "outside the folders" in msg or "given twice" in msg, msg


@pytest.mark.parametrize("field", ["checkpoint", "data", "proxy"])
def test_errors_say_nothing_about_files_outside_the_roots(
        service: Any, service_env: dict[str, Any], tmp_path: Path, field: str) -> None:
    """A file outside the roots that exists and one that does not get the same answer (but
    for the name): the service is no oracle for the file system."""
    there = tmp_path / "there.bin"
    there.write_bytes(b"x" * 100)
    missing = tmp_path / "missing.bin"
    answers = []
    for path in (there, missing):
        value = f"predictor:path={path}" if field == "proxy" else str(path)
        r = requests.post(f"{service.url}/searches", timeout=60,
                          json=_config(service_env, **{field: value}))
        answers.append((r.status_code, _refused(r, ["body", field]).replace(str(path), "P")))
    assert answers[0] == answers[1], answers
    assert "outside the folders" in answers[0][1]


# ---------------------------------------------------------------------- finding 12: symlinks
def _links(allowed: Path, outside: str) -> dict[str, Path]:
    """Symlinks planted inside the allowed root that lead out of it (made once)."""
    made = {
        "to-a-file-outside": outside,
        "to-etc-passwd": "/etc/passwd",
        "to-the-parent": str(allowed.parent),
        "loop-a": str(allowed / "loop-b"),
        "loop-b": str(allowed / "loop-a"),
        "relative-escape": "../outside.safetensors",
    }
    out = {}
    for name, target in made.items():
        link = allowed / name
        if not link.is_symlink():
            os.symlink(target, link)
        out[name] = link
    return out


@pytest.mark.parametrize("field", ["checkpoint", "data", "proxy"])
@pytest.mark.parametrize("link", ["to-a-file-outside", "to-etc-passwd", "to-the-parent",
                                  "loop-a", "relative-escape"])
def test_symlinks_out_of_an_allowed_root_are_refused(
        service: Any, service_env: dict[str, Any], field: str, link: str) -> None:
    links = _links(service_env["allowed"], service_env["outside"])
    path = links[link]
    if link == "to-the-parent":
        path = path / "outside.safetensors"  # a real file, reached through the link
    value = f"predictor:path={path}" if field == "proxy" else str(path)
    r = requests.post(f"{service.url}/searches", timeout=60,
                      json=_config(service_env, **{field: value}))
    msg = _refused(r, ["body", field])
    # a loop inside the root leads nowhere: refused as a path that does not exist
    assert "outside the folders" in msg or "not a usable path" in msg or (
        link == "loop-a" and "does not exist" in msg), msg


def test_a_symlink_that_stays_inside_the_root_is_followed(service: Any,
                                                           service_env: dict[str, Any]) -> None:
    """A link to the allowed checkpoint passes the path check (the request is then refused
    for its worker count, which is checked last: nothing starts)."""
    link = service_env["allowed"] / "same-checkpoint.safetensors"
    if not link.is_symlink():
        os.symlink(service_env["checkpoint"], link)
    r = requests.post(f"{service.url}/searches", timeout=60,
                      json=_config(service_env, checkpoint=str(link), workers=64))
    assert "CPUs" in _refused(r, ["body", "workers"])


# ---------------------------------------------------------------------- finding 3: NaN
_ARCH = '{"ks": [3, 3, 3, 3], "e": [2, 2, 2, 2], "d": [1, 1], "r": %s}'


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400"])
@pytest.mark.parametrize(("path", "body", "loc"), [
    ("/latency/predict", '{"device": "cpu-1t", "space": "tiny", "archs": [ARCH]}'.replace(
        "ARCH", _ARCH), ["body", "archs", 0, "r"]),
    ("/latency/predict", '{"device": "cpu-1t", "space": "tiny", "archs": [%s], '
     '"hashes": VALUE}' % (_ARCH % "16"), ["body", "hashes"]),
    ("/searches", '{"space": "tiny", "objectives": ["macs"], "constraints": {"macs": %s}}',
     ["body", "constraints", "macs"]),
    ("/searches", '{"space": "tiny", "objectives": ["macs"], "n_trials": %s}',
     ["body", "n_trials"]),
    ("/searches", '{"space": "tiny", "objectives": ["accuracy"], "proxy_options": '
     '{"val_limit": %s}}', ["body", "proxy_options", "val_limit"]),
    ("/exports", '{"study": "x", "trial": %s}', ["body", "trial"]),
])
def test_nan_and_infinities_are_a_422_naming_the_field(
        service: Any, path: str, body: str, loc: list[Any], value: str) -> None:
    data = body.replace("VALUE", value) if "VALUE" in body else body % value
    r = requests.post(f"{service.url}{path}", data=data, timeout=60,
                      headers={"content-type": "application/json"})
    _refused(r, loc)  # a 422, valid JSON, naming the field


# ---------------------------------------------------------------------- finding 11
@pytest.mark.parametrize(("change", "loc", "needle"), [
    ({"space": "nope"}, ["body", "space"], "must be one of"),
    ({"objectives": ["latency:../../etc/passwd"]}, ["body", "objectives"],
     "not a device name"),
    ({"objectives": ["latency:no-such-device"]}, ["body", "objectives"], "unknown device"),
    ({"constraints": {"latency:no-such-device": 2.0}}, ["body", "constraints"],
     "unknown device"),
    ({"latency_kind": "magic"}, ["body", "latency_kind"], "must be one of"),
    ({"proxy": "magic"}, ["body", "proxy"], "unknown proxy"),
    ({"proxy": "predictor:kind=magic"}, ["body", "proxy"], "must be one of"),
    ({"proxy": "zico:weights=inherited,weights=init"}, ["body", "proxy"], "given twice"),
    ({"proxy_options": {"val_limit": -5}}, ["body", "proxy_options", "val_limit"],
     "greater than or equal to 1"),
    ({"proxy_options": {"val_limit": 5.0}}, ["body", "proxy_options", "val_limit"],
     "integer"),
    ({"proxy_options": {"channels_last": "yes"}}, ["body", "proxy_options", "channels_last"],
     "boolean"),
    ({"proxy_options": {"bn_batch_size": 0}}, ["body", "proxy_options", "bn_batch_size"],
     "greater than or equal to 1"),
    ({"space": "cifar_mbv3"}, ["body"], "is for space 'tiny'"),
])
def test_configs_the_service_cannot_run_are_refused_at_once(
        service: Any, service_env: dict[str, Any], change: dict[str, Any], loc: list[Any],
        needle: str) -> None:
    before = requests.get(f"{service.url}/searches", timeout=30).json()
    r = requests.post(f"{service.url}/searches", json=_config(service_env, **change),
                      timeout=60)
    assert needle.lower() in _refused(r, loc).lower()
    assert requests.get(f"{service.url}/searches", timeout=30).json() == before


@pytest.mark.parametrize(("change", "field", "needle"), [
    ({"engine": "predictor", "objectives": ["macs", "params"], "workers": 2}, "workers",
     "not a setting of engine 'predictor' (settings of the ray engine)"),
    ({"engine": "ray", "generations": 40}, "generations",
     "not a setting of engine 'ray' (settings of the predictor engine)"),
    ({"generations": 40}, "workers",
     "not a setting of engine 'predictor', which generations chose (settings of the ray "
     "engine)"),
])
def test_a_setting_its_engine_does_not_use_is_a_422_naming_it(
        service: Any, service_env: dict[str, Any], change: dict[str, Any], field: str,
        needle: str) -> None:
    """A search config is one engine's (issue 23): what that engine would ignore is refused
    at the field, as in ``nas search`` and YAML files, and nothing starts."""
    before = requests.get(f"{service.url}/searches", timeout=30).json()
    r = requests.post(f"{service.url}/searches", json=_config(service_env, **change),
                      timeout=60)
    assert _refused(r, ["body", field]) == needle
    assert requests.get(f"{service.url}/searches", timeout=30).json() == before


def test_a_boolean_is_a_boolean(service: Any) -> None:
    arch = get_space("tiny").smallest(16).to_dict()
    for value in ("yes", "true", 1, "1"):
        r = requests.post(f"{service.url}/latency/predict", timeout=30, json={
            "device": "cpu-1t", "space": "tiny", "archs": [arch], "hashes": value})
        assert "boolean" in _refused(r, ["body", "hashes"])
    r = requests.post(f"{service.url}/latency/predict", timeout=30, json={
        "device": "cpu-1t", "space": "tiny", "archs": [arch], "hashes": True})
    assert r.status_code == 200
    assert len(r.json()["hashes"]) == 1
