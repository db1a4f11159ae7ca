"""``nas proxies list|eval`` and ``nas accuracy kinds|fit`` through a root app."""

from __future__ import annotations

import json


def arch_file(tmp_path, space, n=3):
    f = tmp_path / "archs.jsonl"
    f.write_text("".join(a.to_json() + "\n" for a in space.sample_many(n, seed=5)))
    return f


def test_proxies_list_json(run_nas):
    code, out, _ = run_nas(["proxies", "list", "--json"])
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0
    assert rows["inherited"]["needs_checkpoint"]
    assert rows["zico"]["options"]["weights"] == "init"
    assert rows["zico"]["tags"] == ["ofa"]
    assert rows["ofa-imagenet"]["tags"] == ["ofa_mbv3"]


def test_accuracy_kinds_json(run_nas):
    code, out, _ = run_nas(["accuracy", "kinds", "--json"])
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0
    assert {"mlp", "gbdt", "ofa"} <= set(rows)
    assert rows["mlp"]["default"]
    assert rows["mlp"]["encoding"] == "onehot"
    assert rows["gbdt"]["takes_extra_features"]
    assert rows["gbdt"]["tags"] == ["ofa"]


def test_proxies_eval_json_uses_the_checkpoints_data(tiny_checkpoint, tmp_path, run_nas):
    from nas.space import get_space

    f = arch_file(tmp_path, get_space("tiny"))
    argv = ["proxies", "eval", "--space", "tiny", "--checkpoint", str(tiny_checkpoint),
            "--arch-file", str(f), "--proxy", "params", "--proxy", "inherited",
            "--proxy", "naswot:batch_size=16", "--bn-batches", "1", "--val-limit", "32",
            "--cache", str(tmp_path / "c.sqlite"), "--json"]
    code, out, err = run_nas(argv)
    assert code == 0, err
    res = json.loads(out)
    assert len(res["archs"]) == 3
    assert set(res["archs"][0]["scores"]) == {"params", "inherited", "naswot:batch_size=16"}


def test_proxies_eval_errors_are_one_line(tiny_checkpoint, tmp_path, run_nas):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"ks": [3, 3, 3, 3], "e": [2, 2, 2, 2], "d": [1, 1], "r": 16}\n{"ks": 1}\n')
    code, _, err = run_nas(["proxies", "eval", "--space", "tiny", "--arch-file", str(f),
                            "--proxy", "params", "--no-cache"])
    assert code == 2
    assert "bad.jsonl line 2:" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run_nas(["proxies", "eval", "--space", "tiny", "--arch-file", str(f),
                            "--proxy", "nope"])
    assert code == 2
    assert "unknown proxy 'nope'; known: " in err


def test_accuracy_fit_reports_held_out_error(tiny_checkpoint, tmp_path, run_nas):
    argv = ["accuracy", "fit", "--space", "tiny", "--checkpoint", str(tiny_checkpoint),
            "--model", "gbdt", "--n-train", "6", "--n-test", "4", "--zero-cost", "synflow",
            "--bn-batches", "1", "--val-limit", "32", "--cache", str(tmp_path / "c.sqlite"),
            "--json"]
    code, out, err = run_nas(argv)
    assert code == 0, err
    res = json.loads(out)
    assert res["n_train"] == 6
    assert res["features"] == "ordinal+synflow"
    assert res["rmse_points"] >= 0
    assert -1 <= res["kendall_tau"] <= 1
