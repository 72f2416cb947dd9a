"""The SSM benchmark's tiny preset runs end to end on CPU and writes the results schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("tokenizers")

from benchmarks.ssm.report import summary  # noqa: E402
from benchmarks.ssm.run import main  # noqa: E402
from benchmarks.ssm.tasks import mqar_batch  # noqa: E402

_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "data"


def _check(path: Path, task: str, metric: str, arms: set[str]) -> dict:
    res = json.loads(path.read_text())
    assert res["task"] == task and {"name", "gpu", "arms"} <= set(res)
    assert {a["arm"] for a in res["arms"]} == arms
    for a in res["arms"]:
        assert {"arm", "seed", "state_start", "state_final", metric, "train_flops", "wall_s", "peak_mem", "certificates"} <= set(a)
        assert a["train_flops"] > 0 and a["state_final"] <= a["state_start"]
        for c in a["certificates"]:
            assert c["holds"] and c["error"] <= c["bound"] * (1 + 1e-6) + 1e-9
    return res


def test_tiny_lm_end_to_end(tmp_path):
    rc = main(["--preset", "tiny", "--task", "lm", "--arms", "full,lyactl,magnitude", "--seeds", "0",
               "--steps", "6", "--data", str(_FIXTURES), "--out", str(tmp_path)])
    assert rc == 0
    res = _check(tmp_path / "ssm_lm.json", "lm", "val_bpb", {"full", "lyactl", "magnitude"})
    by = {a["arm"]: a for a in res["arms"]}
    assert by["lyactl"]["state_final"] < by["full"]["state_final"]
    assert by["lyactl"]["train_flops"] < by["full"]["train_flops"]
    assert len(by["lyactl"]["certificates"]) == 2 and by["full"]["certificates"] == []


def test_tiny_mqar_end_to_end(tmp_path):
    arms = {"small-scratch", "random", "random-reset", "smallest", "horizon", "frontier", "lyactl-approx"}
    rc = main(["--preset", "tiny", "--task", "mqar", "--arms", ",".join(sorted(arms)),
               "--seeds", "1", "--steps", "6", "--out", str(tmp_path), "--policy", "reset"])
    assert rc == 0
    res = _check(tmp_path / "ssm_mqar.json", "mqar", "accuracy", arms)
    assert all(0.0 <= a["accuracy"] <= 1.0 for a in res["arms"])
    by = {a["arm"]: a for a in res["arms"]}
    assert by["lyactl-approx"]["policy"] == "approx" and by["random-reset"]["policy"] == "reset"
    assert {c["optimizer_policy"] for c in by["random-reset"]["certificates"]} == {"reset"}
    assert {c["optimizer_policy"] for c in by["random"]["certificates"]} == {"slice-exact"}


def test_recall_mixer_with_equal_modes_keeps_no_more_modes_than_random(tmp_path):
    """``--kind recall --equal-modes``: the balanced cut keeps at most r complex modes per layer,
    as random keeps r, and its certificates are re-verified offline."""
    rc = main(["--preset", "tiny", "--task", "mqar", "--kind", "recall", "--heads", "2x4", "--arms", "lyactl,random",
               "--seeds", "0", "--steps", "8", "--equal-modes", "--out", str(tmp_path)])
    assert rc == 0
    res = _check(tmp_path / "ssm_mqar.json", "mqar", "accuracy", {"lyactl", "random"})
    assert res["config"]["task"]["model"]["kind"] == "recall" and res["config"]["equal_modes"]
    by = {a["arm"]: a for a in res["arms"]}
    assert by["lyactl"]["state_final"] <= by["random"]["state_final"] == 2 * 8
    assert all(c["reverified"] and c["modes_after"] <= 8 for c in by["lyactl"]["certificates"])


def test_mqar_targets_are_the_values_of_repeated_keys():
    x, y = mqar_batch(0, 3, 4, 40, 5, 64)
    for b in range(4):
        pairs = {int(x[b, 2 * i]): int(x[b, 2 * i + 1]) for i in range(5)}
        pos = (y[b] != -100).nonzero().flatten()
        assert len(pos) == 5 and all(pos >= 10)
        assert all(pairs[int(x[b, p])] == int(y[b, p]) for p in pos)
    assert (mqar_batch(0, 3, 4, 40, 5, 64)[0] == x).all()


def test_hsv_trace_records_a_certificate_that_holds(tmp_path):
    from benchmarks.ssm.hsv_trace import main as trace_main

    out = tmp_path / "trace.json"
    assert trace_main(["--preset", "tiny", "--data", str(_FIXTURES), "--steps", "4", "--every", "2",
                       "--cache", str(tmp_path / "cache"), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert [t["step"] for t in res["trace"]] == [0, 2, 4]
    assert res["trace"][0]["train_loss"] is None and res["trace"][-1]["train_loss"] > 0
    for t in res["trace"]:
        assert len(t["layers"]) == 2
        for lay in t["layers"]:
            assert 0.0 < lay["discarded_share"] < 1.0 and lay["hsv_top"] >= lay["hsv_at_rank"] > 0
            assert lay["error"] <= lay["bound"] * (1 + 1e-6) and lay["bound_over_error"] >= 1 - 1e-6


def test_several_cuts_with_probes_and_the_report_pairs_them(tmp_path):
    """``--cut-frac a,b`` runs each cut arm at each cut (full once); ``--probe-cut`` records the
    metric around the cut; the report labels ``arm@cut`` and pairs each with random at its cut."""
    rc = main(["--preset", "tiny", "--task", "mqar", "--arms", "full,lyactl-scaled,random", "--seeds", "0",
               "--steps", "10", "--cut-frac", "0.2,0.6", "--keep", "0.5", "--probe-cut", "--out", str(tmp_path)])
    assert rc == 0
    res = _check(tmp_path / "ssm_mqar.json", "mqar", "accuracy", {"full", "lyactl-scaled", "random"})
    cuts = sorted((a["arm"], a["cut_frac"]) for a in res["arms"] if a["arm"] != "full")
    assert cuts == [("lyactl-scaled", 0.2), ("lyactl-scaled", 0.6), ("random", 0.2), ("random", 0.6)]
    for a in res["arms"]:
        probed = a["arm"] != "full"
        assert (a["metric_before_cut"] is not None) == probed and (a["metric_after_cut"] is not None) == probed
        if probed:
            assert a["keep"] == 0.5 and a["state_final"] < a["state_start"]
            assert a["arm"] != "random" or a["state_final"] == a["state_start"] // 2
    rows = {r["arm"]: r for r in summary(res["arms"])}
    assert set(rows) == {"full", "lyactl-scaled@0.2", "lyactl-scaled@0.6", "random@0.2", "random@0.6"}
    by = {(a["arm"], a["cut_frac"]): a["accuracy"] for a in res["arms"]}
    assert rows["lyactl-scaled@0.6"]["vs_random"][0] == pytest.approx(by[("lyactl-scaled", 0.6)] - by[("random", 0.6)])
    assert rows["random@0.2"]["cut_damage"] is not None and rows["full"]["cut_damage"] is None
    for a in res["arms"]:  # [step, loss, seconds]: the training time so far grows with the step
        steps, secs = [x[0] for x in a["losses"]], [x[2] for x in a["losses"]]
        assert steps == sorted(steps) and secs == sorted(secs) and secs[0] >= 0 and secs[-1] <= a["wall_s"] + 1e-6


def test_cut_step_time_times_a_cut_model_at_the_small_shape():
    """The diagnostic's cut model really has the small state when it is timed, and every time is
    a positive, finite number of seconds (no bound on the ratio: a loaded CPU)."""
    import math

    import torch

    from benchmarks.ssm.step_time import cut_step_time
    from lyactl_torch.ssm.lm import SSMLMConfig

    cfg = SSMLMConfig(vocab_size=32, d_model=8, n_layer=2, n_state=12, mlp_hidden=16, chunk=4)
    out = cut_step_time(cfg, 3, 2, 8, torch.device("cpu"), 1, 2)
    assert (out["n_state"], out["r"], out["cut_states"]) == (12, 3, [3, 3])
    assert all(math.isfinite(out[k]) and out[k] > 0 for k in ("fresh_small_s", "before_s", "cut_s", "cut_over_fresh"))
    assert out["cut_over_fresh"] == pytest.approx(out["cut_s"] / out["fresh_small_s"])


def test_cut_point_pairs_each_cut_with_its_groups_full(tmp_path):
    """Old records (cut in the config) and new ones (cut per record) pair with their own file's full."""
    from benchmarks.ssm.cut_point import rows

    def rec(arm, seed, bpb, cut=None, **kw):
        return {"arm": arm, "seed": seed, "val_bpb": bpb, "train_flops": 1.0 if arm == "full" else 0.5,
                "cut_step": None if arm == "full" else 5, **({"cut_frac": cut} if cut is not None else {}), **kw}

    old = {"config": {"cut_frac": 0.25}, "arms": [rec("full", s, 2.0 + s) for s in (0, 1)]
           + [rec("random", s, 2.1 + s + 0.01 * s) for s in (0, 1)]}
    new = {"config": {"cut_frac": 0.5}, "arms": [rec("full", s, 3.0 + s) for s in (0, 1)]
           + [rec("lyactl", s, 3.05 + s, cut=0.75, metric_before_cut=3.0, metric_after_cut=3.2) for s in (0, 1)]}
    (tmp_path / "old.json").write_text(json.dumps(old))
    (tmp_path / "new.json").write_text(json.dumps(new))
    table = {(r["rule"], r["cut"]): r for r in rows([str(tmp_path / "old.json"), str(tmp_path / "new.json")])}
    assert set(table) == {("random", 0.25), ("lyactl", 0.75)}
    assert table[("random", 0.25)]["vs_full"][0] == pytest.approx(0.105)
    assert table[("lyactl", 0.75)]["vs_full"][0] == pytest.approx(0.05)
    assert table[("lyactl", 0.75)]["damage"] == pytest.approx(0.2) and table[("random", 0.25)]["damage"] is None
    assert table[("lyactl", 0.75)]["flops_ratio"] == pytest.approx(0.5)


def test_recall_script_sweeps_then_compares_at_the_best_full_rate(tmp_path):
    """benchmarks/ssm/recall.sh at the tiny CPU size: the comparison runs at the rate where the
    full state recalled best in the sweep."""
    import os
    import shutil
    import subprocess
    import sys

    if shutil.which("bash") is None:
        pytest.skip("no bash")
    root = Path(__file__).resolve().parents[1]
    env = os.environ | {"PRESET": "tiny", "HEADS": "2x4", "SEEDS": "0", "LRS": "3e-3,1e-2", "ARMS": "full,lyactl",
                        "CUTS": "0.5", "PYTHONPATH": os.pathsep.join([str(root), str(root / "backends")]),
                        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    subprocess.run(["bash", str(root / "benchmarks" / "ssm" / "recall.sh"), str(tmp_path)], check=True, env=env,
                   cwd=root, capture_output=True)
    sweep = json.loads((tmp_path / "ssm_mqar_recall_sweep.json").read_text())["arms"]
    best = max((a for a in sweep if a["arm"] == "full"), key=lambda a: a["accuracy"])["lr"]
    res = _check(tmp_path / "ssm_mqar_recall.json", "mqar", "accuracy", {"full", "lyactl"})
    assert {a["lr"] for a in res["arms"]} == {best}


def test_malformed_heads_are_named(capsys):
    with pytest.raises(SystemExit):
        main(["--kind", "recall", "--heads", "4by8"])
    assert "--heads" in capsys.readouterr().err


def test_report_qualifies_labels_by_keep_and_refuses_ambiguous_pairs():
    from benchmarks.ssm.report import paired

    def rec(arm, seed, acc, keep=None, cut=None):
        return {"arm": arm, "seed": seed, "accuracy": acc, "state_final": 8, "train_flops": 1.0, "wall_s": 1.0,
                "cut_frac": cut, "keep": keep}

    runs = [rec("full", s, 0.9) for s in (0, 1)]
    for keep, acc in ((0.5, 0.6), (0.75, 0.8)):
        runs += [rec(a, s, acc + (0.05 if a == "lyactl" else 0.0) + 0.01 * s, keep, 0.75)
                 for a in ("lyactl", "random") for s in (0, 1)]
    rows = {r["arm"]: r for r in summary(runs)}
    assert {"lyactl@0.75/keep0.5", "random@0.75/keep0.75"} <= set(rows)
    assert rows["lyactl@0.75/keep0.5"]["vs_random"][0] == pytest.approx(0.05)
    assert rows["lyactl@0.75/keep0.75"]["vs_full"][0] == pytest.approx(0.8 + 0.05 + 0.005 - 0.9)
    with pytest.raises(ValueError, match="full"):
        paired(runs + [rec("full", 0, 0.91)], "lyactl@0.75/keep0.5", "full")
