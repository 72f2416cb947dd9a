"""The state-truncation certificate (lyactl.control.state_certificate): the logged condition
recomputes the bound from the DISCARDED values, re-verifies with the one evaluator, fails on
any tampered number, round-trips through JSON, and `lyactl report` re-verifies it."""

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lyactl.app import exit_codes
from lyactl.control.decision_log import DecisionLog, reverify, verify_certificate
from lyactl.control.state_certificate import CHUNK, ROUNDING, StateCertificate
from lyactl.control.state_truncation import StateOutput, StateTruncation, StateTruncationPolicy
from lyactl.errors import InvalidArgumentError
from lyactl.verdict import Verdict

_pos = st.floats(1e-6, 10.0, allow_nan=False)


def _cert(discarded, error, method="balanced", layer="blocks.0.mixer"):
    n = 2 * len(discarded) + 4
    return StateCertificate(layer, method, 7, n, n - len(discarded), n // 2, n // 2 - 1, tuple(discarded), error, 64)


@given(st.lists(_pos, min_size=1, max_size=3 * CHUNK + 5), st.floats(0.0, 0.999), st.sampled_from(["balanced", "modal"]))
def test_the_logged_condition_recomputes_the_bound_from_the_discarded_values(discarded, frac, method):
    factor = 2.0 if method == "balanced" else 1.0
    c = _cert(sorted(discarded, reverse=True), 0.0, method)
    c = _cert(c.discarded, frac * c.bound, method)
    assert math.isclose(c.bound, factor * math.fsum(discarded), rel_tol=1e-12)
    j = c.certificate().to_json()
    assert c.verdict is Verdict.HOLDS and verify_certificate(j) == []
    assert j["margin"] == pytest.approx(c.bound * (1 + ROUNDING) - c.error, rel=1e-12, abs=1e-15)


@given(st.lists(_pos, min_size=2, max_size=40), st.data())
def test_a_tampered_value_error_or_bound_fails_reverification(discarded, data):
    c = _cert(sorted(discarded, reverse=True), 0.0)
    c = _cert(c.discarded, 0.5 * c.bound)
    j = c.certificate().to_json()
    key = data.draw(st.sampled_from([f"h_{i}" for i in range(len(discarded))] + ["bound"]))
    bad = json.loads(json.dumps(j))
    bad["numbers"][key] *= data.draw(st.sampled_from([0.5, 1.5]))
    assert verify_certificate(bad)  # the recomputed bound or the margin no longer matches
    bad = json.loads(json.dumps(j))
    bad["numbers"]["error"] = 1.01 * c.bound  # an error outside the bound
    assert verify_certificate(bad)


def test_non_finite_or_negative_numbers_never_hold():
    assert _cert([1.0, 0.5], math.nan).verdict is Verdict.UNKNOWN
    assert _cert([1.0, math.nan], 0.1).verdict is Verdict.UNKNOWN
    assert _cert([1.0, -0.5], 0.1).verdict is Verdict.FAILS
    assert _cert([0.25], 0.5 * (1 + 10 * ROUNDING)).verdict is Verdict.FAILS  # outside the bound + allowance
    nan_json = _cert([1.0, 0.5], math.nan).certificate().to_json()
    assert nan_json["numbers"]["error"] is None and verify_certificate(nan_json)
    with pytest.raises(InvalidArgumentError, match="discarded"):
        _cert([], 0.0)
    with pytest.raises(InvalidArgumentError, match="method"):
        _cert([1.0], 0.0, method="random")


@given(_pos, st.sampled_from(["balanced", "modal"]))
def test_an_error_equal_to_the_bound_holds_and_reverifies(h, method):
    """The bound is attained (one real mode dropped: the error peaks at w = 0 at exactly its
    modal bound), so ``error == bound`` holds, also after the last bit of rounding."""
    c = _cert([h], 0.0, method)
    for error in (c.bound, c.bound * (1 + 1e-12)):
        tie = _cert([h], error, method)
        assert tie.verdict is Verdict.HOLDS and verify_certificate(tie.certificate().to_json()) == []


def test_json_and_certificate_round_trips():
    c = StateCertificate("ssm0", "modal", 3, 32, 8, 16, 4, (0.3, 0.2, 0.1), 0.05, 128, (1.0, 0.5, 0.3, 0.2, 0.1),
                         (0, 2, 5, 9), "magnitude", "slice-exact")
    assert StateCertificate.from_json(json.loads(json.dumps(c.to_json()))) == c
    back = StateCertificate.from_certificate(c.certificate(), "ssm0")
    assert (back.discarded, back.error, back.states_after, back.modes_after, back.n_freq, back.method) == \
        (c.discarded, c.error, c.states_after, c.modes_after, c.n_freq, c.method)
    j = c.to_json()
    assert j["holds"] and j["bound"] == pytest.approx(0.6) and j["hsv_discarded"] == [0.3, 0.2, 0.1]


def _log_one(path, discarded, error):
    decider = StateTruncation(StateTruncationPolicy(guard=None))
    ev = decider.event(7, [_cert(discarded, error)], [0], 100.0, 80.0)
    DecisionLog(path).write(StateOutput((ev,)))
    return ev


def test_the_decision_log_reverifies_and_a_tampered_hsv_in_the_file_fails(tmp_path):
    path = tmp_path / "decisions.jsonl"
    _log_one(path, [0.4, 0.2, 0.1], 0.3)
    assert reverify(path).ok and reverify(path).n_certificates == 1
    text = path.read_text()
    path.write_text(text.replace('"h_1": 0.2', '"h_1": 0.02'))
    rep = reverify(path)
    assert not rep.ok and any("bound" in f[3] for f in rep.failures)


def _run_folder(tmp_path, discarded, error):
    from lyactl.app.runfolder import write_manifest

    ev = _log_one(tmp_path / "decisions.jsonl", discarded, error)
    arm = {"arm": "lyactl", "controlled": True, "events": [{"event_id": ev.event_id, "groups": ["blocks.0.mixer"]}],
           "restored": [], "flops_per_token_before": 100.0, "flops_per_token_after": 80.0, "train_flops": 1e6,
           "dense_train_flops": 1.2e6, "wall_s": 1.0, "val_bpb": 2.0, "val_bpb_stderr": 0.01, "n_params_after": 10,
           "fpt": [[0, 100.0], [7, 80.0]]}
    (tmp_path / "summary.json").write_text(json.dumps({"arms": [arm]}))
    (tmp_path / "metrics.jsonl").write_text("")
    write_manifest(tmp_path)


def test_lyactl_report_reverifies_state_certificates(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from lyactl.app.cli import main
    from lyactl.app.runfolder import write_manifest

    _run_folder(tmp_path, [0.4, 0.2, 0.1], 0.3)
    assert main(["report", str(tmp_path)]) == exit_codes.OK
    assert "state-truncation/balanced x1" in capsys.readouterr().out
    log = tmp_path / "decisions.jsonl"
    log.write_text(log.read_text().replace('"error": 0.3', '"error": 1.5'))  # the error moved outside the bound
    write_manifest(tmp_path)  # resealed: only the re-verification can catch it
    assert main(["report", str(tmp_path)]) == exit_codes.FAILS
    assert "condition does not hold" in capsys.readouterr().out
