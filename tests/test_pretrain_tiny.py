"""The pretraining benchmark's one command, at a tiny size on CPU: every arm runs, the results
file has the schema of docs/results.md, and the derived arms match lyactl's compute."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
ARMS = {"dense", "lyactl", "lyactl-arch-scratch", "small-dense", "dense-short", "random", "magnitude", "taylor",
        "freeze", "frontier", "lyactl-wide"}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("pretrain")
    cmd = [sys.executable, "-m", "benchmarks.pretrain", "run", "--preset", "tiny",
           "--data", str(ROOT / "tests" / "fixtures" / "data"),
           "--corpus", str(ROOT / "backends" / "lyactl_torch" / "data" / "demo_corpus"),
           "--out", str(tmp / "run"), "--name", "tiny", "--results", str(tmp / "results")]
    env = dict(os.environ) | {"OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "backends")])}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((tmp / "results" / "tiny.json").read_text())


def test_every_arm_is_there_with_the_schema(results):
    assert ARMS <= {a["arm"] for a in results["arms"]}
    assert results["name"] == "tiny" and results["tokens"] > 0 and isinstance(results["gpu"], str)
    for a in results["arms"]:
        for key in ("arm", "seed", "wall_s", "train_flops", "val_bpb", "hellaswag_acc_norm", "mmlu_acc"):
            assert key in a, (a["arm"], key)
        assert a["wall_s"] > 0 and a["train_flops"] > 0 and 0 < a["val_bpb"] < 20
    for a in results["arms"]:
        if a["arm"] == "frontier":
            assert a["n_params"] > 0 and a["tokens"] > 0


def test_derived_arms_match_lyactls_compute(results):
    by = {a["arm"]: a for a in results["arms"] if a["seed"] == 0}
    target = by["lyactl"]["train_flops"]
    # step granularity: within one step's FLOPs of lyactl's total
    for arm in ("lyactl-arch-scratch", "dense-short", "small-dense"):
        step = by[arm]["train_flops"] / by[arm]["steps"]
        assert abs(by[arm]["train_flops"] - target) <= step, arm
    assert by["dense"]["train_flops"] >= target


def test_paired_tests_against_dense(results):
    ids = {p["id"] for p in results["paired"]}
    assert "lyactl-s0" in ids
    vs = {p["id"]: p["vs"] for p in results["paired_vs_lyactl"]}
    assert {vs[f"{r}-s0"] for r in ("random", "magnitude", "taylor")} == {"lyactl-s0"}
    assert not {p["arm"] for p in results["paired_vs_lyactl"]} & {"dense", "lyactl", "frontier"}
    for p in results["paired"]:
        b = p["tests"]["bpb"]["bpb"]
        assert b["ci_low"] <= b["diff"] <= b["ci_high"]


@pytest.mark.parametrize("frac", [0.35, 0.5, 0.6, 0.8])
def test_small_dense_keeps_the_models_proportions(frac):
    """The small-dense arm shrinks heads and MLP together (an earlier rule picked 1 head beside a
    wide MLP) and its FLOPs/token is the family member's nearest to the target."""
    from benchmarks.pretrain.arms import PRESETS, plan
    from benchmarks.pretrain.job import _fpt, _matching_dense

    spec = next(j for j in plan(PRESETS["h200"], "all", work="w", data="d", out="o") if j["arm"] == "small-dense")
    full = _fpt(spec, 8192, None, None)
    m = _matching_dense(spec, 8192, frac * full)
    base = spec["model"]
    assert m["d_model"] == base["d_model"] and m["n_layer"] == base["n_layer"]
    assert abs(m["mlp_hidden"] / m["n_head"] - base["mlp_hidden"] / base["n_head"]) <= 64 / m["n_head"] + 1e-9
    got = _fpt(spec | {"model": m}, 8192, None, None)
    for h in (m["n_head"] - 1, m["n_head"] + 1):  # its neighbours in the family are no closer
        if 1 <= h <= base["n_head"]:
            nb = base | {"n_head": h, "mlp_hidden": 128 * round(h * base["mlp_hidden"] / base["n_head"] / 128)}
            assert abs(got - frac * full) <= abs(_fpt(spec | {"model": nb}, 8192, None, None) - frac * full)


@pytest.mark.parametrize("preset", ["tiny", "h200"])
def test_the_wide_start_is_pruned_to_denses_compute(preset, tmp_path):
    """lyactl-wide's budget makes the wide model's FLOPs/token, less the saving, dense's."""
    from benchmarks.pretrain.arms import PRESETS, plan
    from benchmarks.pretrain.job import _derive, _fpt

    spec = next(j for j in plan(PRESETS[preset], "all", work="w", data="d", out="o") if j["arm"] == "lyactl-wide")
    assert spec["model"] == PRESETS[preset]["wide"] and spec["match"] == PRESETS[preset]["dense"]
    got = _derive(spec, tmp_path, 1024)
    wide, dense = _fpt(spec, 1024, None, None), _fpt(spec | {"model": spec["match"]}, 1024, None, None)
    assert 0 < got["policy"]["budget"] < 1 and dense < wide
    assert abs(wide * (1 - got["policy"]["budget"]) - dense) <= 1e-9 * dense


def test_a_warmup_job_trains_a_few_steps_and_is_left_out_of_the_merge(tmp_path):
    """A warm-up spec (what ``with_warmup`` makes when the preset compiles) runs through the job
    runner: 3 steps, no evaluation, and the merge does not count it as an arm."""
    import benchmarks.pretrain.cli as pretrain
    from benchmarks.pretrain.arms import PRESETS, plan, with_warmup
    from benchmarks.pretrain.report import merge

    preset = PRESETS["tiny"]
    work = pretrain._prepare(ROOT / "backends" / "lyactl_torch" / "data" / "demo_corpus", preset, tmp_path / "work")
    jobs = plan(preset, "1", work=str(work), data=str(ROOT / "tests" / "fixtures" / "data"), out=str(tmp_path))
    dense = next(j for j in jobs if j["arm"] == "dense")
    warm = with_warmup([dense | {"compile": True}])[0]
    assert warm["arm"] == "warm"
    spec = tmp_path / "warm.spec.json"
    spec.write_text(json.dumps(warm | {"compile": False}))  # the runner's path, without a CPU compile
    assert pretrain.main(["job", str(spec), "--out", str(tmp_path)]) == 0
    rec = json.loads((tmp_path / f"{warm['id']}.json").read_text())
    assert rec["steps"] == 3 and rec["val_bpb"] is None
    assert merge(tmp_path, "t", "tiny")["arms"] == []
