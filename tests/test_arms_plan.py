"""The H200 job plan holds what issue 6 asks for (no GPU needed to check a plan)."""

from __future__ import annotations



from benchmarks.pretrain.arms import PRESETS, plan  # noqa: E402

REQUIRED = {"dense", "lyactl", "lyactl-arch-scratch", "small-dense", "dense-short", "random", "magnitude", "taylor",
            "freeze", "frontier"}


def _jobs(preset: str = "h200") -> list[dict]:
    return plan(PRESETS[preset], "all", work="w", data="d", out="o")


def test_every_named_arm_and_the_seeds():
    jobs = _jobs()
    assert REQUIRED <= {j["arm"] for j in jobs}
    for arm in ("dense", "lyactl"):
        assert len({j["seed"] for j in jobs if j["arm"] == arm}) >= 3
    assert len({j["id"] for j in jobs}) == len(jobs)


def test_frontier_has_four_sizes_and_two_budgets():
    front = [j for j in _jobs() if j["arm"] in ("frontier", "dense") and j["seed"] == 0]
    sizes = {(j["model"]["d_model"], j["model"]["n_layer"]) for j in front}
    budgets = {j["steps"] for j in front}
    assert len(sizes) >= 4 and len(budgets) >= 2


def test_replays_run_on_the_seed_of_the_run_they_replay():
    jobs = {j["id"]: j for j in _jobs()}
    for rule in ("random", "magnitude", "taylor"):
        for j in (v for v in jobs.values() if v["arm"] == rule):
            assert j["source"] == f"lyactl-s{j['seed']}" and j["needs"] == [j["source"]] and j["source"] in jobs
        assert len({v["seed"] for v in jobs.values() if v["arm"] == rule}) >= 2


def test_the_late_arm_decides_only_in_its_window():
    late = next(j for j in _jobs() if j["arm"] == "lyactl-late")
    pol = late["policy"]
    assert pol["kind"] == "lyactl" and 0 < pol["warmup_frac"] < pol["last_frac"] < 1 and 0 < pol["budget"] < 1
    assert pol["warmup_frac"] > PRESETS["h200"]["lyactl"]["warmup_frac"]


def test_every_static_starting_shape_is_warmed_once():
    from benchmarks.pretrain.arms import with_warmup

    jobs = with_warmup(_jobs())
    warm = {j["id"]: j for j in jobs if j["arm"] == "warm"}
    timed = [j for j in jobs if j["arm"] != "warm"]
    shapes = {tuple(j["model"].values()) for j in timed if j.get("derive") not in ("lyactl-arch-scratch", "small-dense")}
    assert {tuple(w["model"].values()) for w in warm.values()} == shapes and len(warm) == len(shapes)
    for j in timed:
        mine = [n for n in j["needs"] if n in warm]
        if j.get("derive") in ("lyactl-arch-scratch", "small-dense"):
            assert mine == [] and not j.get("warmed")
        else:
            assert len(mine) == 1 and warm[mine[0]]["model"] == j["model"] and j["warmed"]
    for w in warm.values():
        assert w["steps"] <= 3 and w["eval"]["tasks"] == [] and w["policy"] is None and w["needs"] == []


def test_no_warmup_without_compilation():
    from benchmarks.pretrain.arms import with_warmup

    jobs = _jobs("tiny")
    assert with_warmup(jobs) == jobs


def test_the_gradual_arm_ramps_inside_its_decision_window():
    g = next(j for j in _jobs() if j["arm"] == "lyactl-gradual")
    pol = g["policy"]
    assert pol["kind"] == "lyactl" and pol["budget"] == PRESETS["h200"]["lyactl"]["budget"]
    assert pol["warmup_frac"] < pol["ramp_end_frac"] <= pol["last_frac"]


def test_the_wide_start_runs_on_two_seeds_and_its_dense_twin_is_a_frontier_point():
    jobs = _jobs()
    wide = PRESETS["h200"]["wide"]
    arms = [j for j in jobs if j["arm"] == "lyactl-wide"]
    assert {j["seed"] for j in arms} == {0, 1}
    assert all(j["model"] == wide and j["derive"] == "match-compute" and j["policy"]["kind"] == "lyactl" for j in arms)
    assert any(j["arm"] == "frontier" and j["model"] == wide and j["steps"] == arms[0]["steps"] for j in jobs)
