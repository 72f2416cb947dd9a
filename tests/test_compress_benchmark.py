"""The compression benchmark's tiny preset runs end to end on CPU: the results schema, the arm
subset, the per-event and per-report records, and the report's paired summary."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("torch")
pytest.importorskip("tokenizers")

from benchmarks.compress.report import summary  # noqa: E402
from benchmarks.compress.run import main  # noqa: E402


def test_tiny_compress_arms_events_and_monitor_trace(tmp_path):
    out = tmp_path / "compress.json"
    rc = main(["--preset", "tiny", "--tokens", "12000", "--seeds", "2", "--arms",
               "lyactl-distill,oneshot-distill,oneshot-mix-distill", "--out", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["freeze"] is True and doc["prior"] == "none"
    arms = [a for a in doc["arms"] if a["arm"] != "teacher"]
    assert sorted({a["arm"] for a in arms}) == ["lyactl-distill", "oneshot-distill", "oneshot-mix-distill"]
    assert len(arms) == 6
    for a in arms:
        assert a["flops_per_token_ratio"] <= 0.5 + 1e-9 and a["reached_target"]
        pruned = sum(e.get("prune", 0) for e in a["events"])
        for e in a["events"]:  # the per-kind counts add up to the per-action ones
            for act in ("prune", "freeze"):
                assert e.get(act, 0) == sum(v for k, v in e.items() if k.startswith(act + ":"))
        assert 0 < pruned <= sum(a["certificates"].values())  # a freeze may carry two certificate kinds
    assert all(isinstance(a["restores"], list) for a in arms)
    for a in arms:  # the loss trace, where a removal did or did not recover
        assert a["lm_losses"] and all(math.isfinite(x) for x in a["lm_losses"]) and a["lm_loss_every"] >= 1
    lyactl = next(a for a in arms if a["arm"] == "lyactl-distill")
    assert lyactl["monitors"] and all(isinstance(r, dict) for r in lyactl["monitors"])
    for row in lyactl["monitors"]:
        ratio = row.pop("settled_dL_over_tol", None)  # the settled monitor's [min, median] dL / tol
        assert ratio is None or (len(ratio) == 2 and 0 <= ratio[0] <= ratio[1])
        for seen, holds, unknown in row.values():
            assert 0 <= holds + unknown <= seen
    for a in arms:
        if a["arm"] == "oneshot-distill":  # one event at step 0, one certificate per removed group
            assert [e["step"] for e in a["events"]] == [0]
            assert a["events"][0]["prune"] == sum(a["certificates"].values())
    def per_kind(a):
        out = {}
        for e in a["events"]:
            for k, v in e.items():
                if k.startswith("prune:"):
                    out[k] = out.get(k, 0) + v
        return out

    for seed in (0, 1):  # the mix arm takes lyactl-distill's structure in one event
        by = {a["arm"]: a for a in arms if a["seed"] == seed}
        assert per_kind(by["oneshot-mix-distill"]) == per_kind(by["lyactl-distill"])
        assert len(by["oneshot-mix-distill"]["events"]) == 1
    s = summary(doc)  # no scratch-full arm: the report still pairs what is there
    assert s["scratch_full_bpb"] is None
    row = next(iter(s["by_tokens"].values()))
    assert row["oneshot-distill"]["lyactl_distill_minus_this"]["n"] == 2


def test_unknown_arm_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        main(["--preset", "tiny", "--arms", "lyactl,bogus", "--out", str(tmp_path / "c.json")])


def test_restores_list_the_reports_that_undid_events():
    from types import SimpleNamespace as NS

    from benchmarks.compress.run import _restores

    outs = [NS(restores=()), NS(restores=(NS(step=5), NS(step=7))), NS(restores=())]
    assert _restores(outs) == [{"report": 1, "event_steps": [5, 7]}]
    assert _restores([]) == []
