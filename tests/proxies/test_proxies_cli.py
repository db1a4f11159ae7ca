"""``nas proxies list|eval`` and ``nas accuracy fit`` through a root app."""

from __future__ import annotations

import json
import sys

import typer

from nas.errors import NASError
from nas.proxies._cli import register


def run_cli(argv, capsys):
    app = typer.Typer(pretty_exceptions_enable=False)
    register(app)
    try:
        app(args=argv, prog_name="nas", standalone_mode=False)
        code = 0
    except NASError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def arch_file(tmp_path, space, n=3):
    f = tmp_path / "archs.jsonl"
    f.write_text("".join(a.to_json() + "\n" for a in space.sample_many(n, seed=5)))
    return f


def test_proxies_list_json(capsys):
    code, out, _ = run_cli(["proxies", "list", "--json"], capsys)
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and rows["inherited"]["needs_checkpoint"]
    assert rows["zico"]["options"]["weights"] == "init"


def test_proxies_eval_json_uses_the_checkpoints_data(tiny_checkpoint, tmp_path, capsys):
    from nas.space import get_space

    f = arch_file(tmp_path, get_space("tiny"))
    argv = ["proxies", "eval", "--space", "tiny", "--checkpoint", str(tiny_checkpoint),
            "--arch-file", str(f), "--proxy", "params", "--proxy", "inherited",
            "--proxy", "naswot:batch_size=16", "--bn-batches", "1", "--val-limit", "32",
            "--cache", str(tmp_path / "c.sqlite"), "--json"]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    res = json.loads(out)
    assert len(res["archs"]) == 3
    assert set(res["archs"][0]["scores"]) == {"params", "inherited", "naswot:batch_size=16"}


def test_proxies_eval_errors_are_one_line(tiny_checkpoint, tmp_path, capsys):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"ks": [3, 3, 3, 3], "e": [2, 2, 2, 2], "d": [1, 1], "r": 16}\n{"ks": 1}\n')
    code, _, err = run_cli(["proxies", "eval", "--space", "tiny", "--arch-file", str(f),
                            "--proxy", "params", "--no-cache"], capsys)
    assert code == 2 and "bad.jsonl line 2:" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["proxies", "eval", "--space", "tiny", "--arch-file", str(f),
                            "--proxy", "nope"], capsys)
    assert code == 2 and "known proxies:" in err


def test_accuracy_fit_reports_held_out_error(tiny_checkpoint, tmp_path, capsys):
    argv = ["accuracy", "fit", "--space", "tiny", "--checkpoint", str(tiny_checkpoint),
            "--model", "gbdt", "--n-train", "6", "--n-test", "4", "--zero-cost", "synflow",
            "--bn-batches", "1", "--val-limit", "32", "--cache", str(tmp_path / "c.sqlite"),
            "--json"]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    res = json.loads(out)
    assert res["n_train"] == 6 and res["features"] == "ordinal+synflow"
    assert res["rmse_points"] >= 0 and -1 <= res["kendall_tau"] <= 1
