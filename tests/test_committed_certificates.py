"""Every certificate behind a decision of a committed GPU run re-verifies offline with lyactl
alone (benchmarks/results/pretrain_h200.json carries each lyactl run's events in full), and
the replay baselines' decisions say that no certificate backs them."""

from __future__ import annotations

import json
from pathlib import Path

from lyactl.control.decision_log import verify_certificate

_RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "pretrain_h200.json"


def _decisions(run_prefix: str) -> list[tuple[str, dict]]:
    runs = json.loads(_RESULTS.read_text())["events"]
    return [(r["id"], d) for r in runs if r["id"].startswith(run_prefix) for e in r["events"] for d in e["decisions"]]


def test_every_lyactl_decision_re_verifies():
    decisions = _decisions("lyactl")
    assert len({run for run, _ in decisions}) >= 3 and len(decisions) >= 100
    for run, d in decisions:
        assert d["certificates"], (run, d["group"])
        for cert in d["certificates"]:
            assert verify_certificate(cert) == [], (run, d["group"], cert["monitor"])


def test_replay_decisions_are_marked_uncertified():
    for rule in ("random", "magnitude", "taylor"):
        decisions = _decisions(rule)
        assert decisions
        for run, d in decisions:
            assert all(c["verdict"] == "unknown" and c["monitor"].startswith("baseline:") for c in d["certificates"]), run
