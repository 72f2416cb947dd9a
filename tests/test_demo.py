"""`lyactl demo` at the tiny preset: end to end, every artefact written, the decision log
re-verifies offline, and the numbers in the files agree with each other."""

import json
import math

import pytest

pytest.importorskip("torch")
pytest.importorskip("matplotlib")
pytest.importorskip("tokenizers")

from lyactl.app.cli import main
from lyactl.control.decision_log import read_log, reverify
from lyactl.app.runreport import PLOTS

ARTEFACTS = ("config.json", "split.json", "tokenizer.json", "decisions.jsonl", "metrics.jsonl", "metrics.csv",
             "traces.json", "summary.json", "dense.pt", "lyactl.pt", "run.log") + PLOTS


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    code = main(["demo", "--preset", "tiny", "--out", str(out), "--no-progress", "--threads", "2"])
    return code, out


def test_demo_writes_every_artefact(demo_run, capsys):
    code, out = demo_run
    assert code == 0
    missing = [name for name in ARTEFACTS if not (out / name).is_file()]
    assert missing == []
    assert all((out / p).stat().st_size > 1000 for p in PLOTS)  # real PNGs, not empty files


def test_demo_arms_share_start_and_data(demo_run):
    _, out = demo_run
    arms = {a["arm"]: a for a in json.loads((out / "summary.json").read_text())["arms"]}
    cfg = json.loads((out / "config.json").read_text())
    dense, ctl = arms["dense"], arms["lyactl"]
    assert dense["flops_per_token_before"] == ctl["flops_per_token_before"]
    assert dense["tokens"] == ctl["tokens"]
    # before the controller's warm-up ends nothing acts on the weights: same seed, same
    # batches, so the two runs compute the same losses
    warm = int(cfg["controller"]["warmup_frac"] * cfg["training"]["steps"])
    d_loss, c_loss = dict(map(tuple, dense["losses"])), dict(map(tuple, ctl["losses"]))
    early = [s for s in d_loss if s + 1 < warm]
    assert len(early) >= 2
    assert all(math.isclose(d_loss[s], c_loss[s], rel_tol=1e-6) for s in early)
    assert all(math.isfinite(a["val_bpb"]) and a["val_bpb"] > 0 for a in arms.values())


def test_demo_decisions_reverify_and_match_the_flops(demo_run):
    _, out = demo_run
    report = reverify(out / "decisions.jsonl")
    assert report.ok, report.failures[:3]
    arms = {a["arm"]: a for a in json.loads((out / "summary.json").read_text())["arms"]}
    ctl = arms["lyactl"]
    decisions = [r for r in read_log(out / "decisions.jsonl") if r["type"] == "decision"]
    assert report.n_decisions == len(decisions) == sum(len(e["groups"]) for e in ctl["events"])
    # the training FLOPs are the sum over steps of FLOPs/token x tokens/step (piecewise constant)
    fpt, steps = ctl["fpt"], ctl["steps"]
    tok = ctl["tokens"] / steps
    bounds = [s for s, _ in fpt] + [steps]
    total = sum(f * tok * (bounds[i + 1] - bounds[i]) for i, (_, f) in enumerate(fpt))
    assert math.isclose(total, ctl["train_flops"], rel_tol=1e-9)
    kept = ctl["train_flops"] / ctl["dense_train_flops"]
    assert (kept < 1.0) == bool(decisions and set(ctl["restored"]) != {e["event_id"] for e in ctl["events"]})


def test_report_reverifies_and_fails_on_a_tampered_log(demo_run, tmp_path, capsys):
    _, out = demo_run
    assert main(["report", str(out)]) == 0
    assert "re-verified offline" in capsys.readouterr().out
    lines = (out / "decisions.jsonl").read_text().splitlines()
    idx = next((i for i, x in enumerate(lines) if json.loads(x)["type"] == "decision"), None)
    if idx is None:
        pytest.skip("no decision in this tiny run to tamper with")
    rec = json.loads(lines[idx])
    cert = rec["certificates"][0]
    key = next(k for k, v in cert["numbers"].items() if k.startswith("V_") and v is not None)
    cert["numbers"][key] = cert["numbers"][key] * 1e6 + 1.0  # the logged evidence no longer supports it
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("summary.json", "metrics.jsonl", "traces.json"):
        (bad / name).write_text((out / name).read_text())
    (bad / "decisions.jsonl").write_text("\n".join(lines[:idx] + [json.dumps(rec)] + lines[idx + 1:]) + "\n")
    assert main(["report", str(bad)]) == 1
    assert "FAIL" in capsys.readouterr().out
