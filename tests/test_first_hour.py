"""A newcomer's first hour (issue 17): every case from the issue's "Why" list that is not
about the run folder (tests/test_run_folder.py) or the README loop (tests/test_readme_loop.py).
"""

import math
import warnings

import numpy as np
import pytest
import sympy
from hypothesis import given, settings, strategies as st

from lyactl.app import exit_codes
from lyactl.app.cli import build_parser, main
from lyactl.analysis.candidates import QuadraticCandidate
from lyactl.control.controller import Controller, ControllerConfig
from lyactl.control.groups import Group, GroupKind, GroupStats
from lyactl.control.monitors import MonitorConfig, Role
from lyactl.control.schedule_check import decision_schedule
from lyactl.control.user_monitors import Below, CallableWindowCandidate, user_monitor
from lyactl.errors import InvalidArgumentError


# ----------------------------------------------------------------- verify and the CLI's exit codes
@pytest.mark.parametrize("argv", [
    ["--optimizer", "gd", "--lr", "1e308", "--curvature", "1e308"],
    ["--optimizer", "adam", "--lr", "1e308", "--curvature", "1e300"],
    ["--optimizer", "nesterov", "--lr", "1e200", "--momentum", "0.5", "--curvature", "1e200"],
])
def test_overflowing_values_are_bad_input_not_a_traceback(argv, capsys):
    assert main(["verify", *argv]) == exit_codes.BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lyactl: error: --lr") and "overflow" in err[0]


@pytest.mark.parametrize("opt", ["heavy-ball", "nesterov"])
def test_momentum_methods_need_momentum(opt, capsys):
    assert main(["verify", "--optimizer", opt, "--lr", "0.1", "--curvature", "1"]) == exit_codes.BAD_INPUT
    assert "--momentum" in capsys.readouterr().err


def test_verdicts_map_to_exit_codes(capsys):
    assert main(["verify", "--optimizer", "gd", "--lr", "0.1", "--curvature", "1"]) == exit_codes.OK
    assert main(["verify", "--optimizer", "gd", "--lr", "0.1", "--curvature", "30"]) == exit_codes.FAILS
    assert main(["verify", "--optimizer", "gd", "--lr", "1", "--curvature", "2"]) == exit_codes.UNKNOWN  # on the edge
    out = capsys.readouterr().out
    assert "beta" not in next(l for l in out.splitlines() if l.startswith("region:"))  # gd has no beta


def test_help_states_the_exit_codes_and_matrix_is_a_file():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert "70" in parser.format_help() and "exit codes" in parser.format_help()
    for name, p in sub.choices.items():
        if name == "eval":  # parses its own command line (lyactl_torch.evaluate)
            continue
        text = p.format_help()
        assert "exit codes:" in text and "2 bad input" in text, name
    matrix = sub.choices["verify"].format_help()
    assert "path of a file" in matrix and ".npy" in matrix


def test_an_unexpected_exception_is_one_line_and_an_internal_error(monkeypatch, capsys):
    from lyactl.app import cmd_verify

    def boom(args):
        raise RuntimeError("something lyactl did not expect\nsecond line")
    monkeypatch.delenv("LYACTL_TRACEBACK", raising=False)
    monkeypatch.setattr(cmd_verify, "run", boom)
    assert main(["verify", "--optimizer", "gd", "--lr", "0.1", "--curvature", "1"]) == exit_codes.INTERNAL
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "internal error" in err[0] and "report" in err[0] and "Traceback" not in err[0]
    assert exit_codes.INTERNAL not in (exit_codes.OK, exit_codes.FAILS, exit_codes.BAD_INPUT, exit_codes.UNKNOWN)


def test_demo_refuses_an_unknown_device(capsys):
    pytest.importorskip("torch")
    assert main(["demo", "--device", "tpu", "--preset", "tiny"]) == exit_codes.BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--device" in err[0] and "tpu" in err[0]


# ----------------------------------------------------------------- certificates that mean something
@pytest.mark.parametrize("candidate", [sympy.Integer(3), "lr", "loss + 1", "2*lr*interval"])
def test_a_candidate_without_group_statistics_is_refused_by_name(candidate):
    with pytest.raises(InvalidArgumentError, match="'const'"):
        user_monitor("const", Role.COLLAPSED, candidate, Below(5.0))


def test_a_constant_callable_is_refused_and_a_dependent_one_accepted():
    with pytest.raises(InvalidArgumentError, match="'flat'"):
        user_monitor("flat", Role.COLLAPSED, lambda a: np.ones_like(a["w_sq"]), Below(2.0))
    with pytest.raises(InvalidArgumentError, match="'scalars'"):
        user_monitor("scalars", Role.COLLAPSED, lambda a: a["lr"] * 2, Below(2.0))
    with pytest.raises(InvalidArgumentError, match="'broken'"):
        CallableWindowCandidate(lambda a: a["no_such_field"], "broken")
    m = user_monitor("ok", Role.COLLAPSED, lambda a: a["w_sq"] + a["dw_sq"], Below(2.0))
    assert m.name == "ok"


def test_a_quadratic_candidate_needs_a_nonzero_P():
    for P in (np.zeros((2, 2)), sympy.zeros(2, 2)):
        with pytest.raises(InvalidArgumentError, match="P"):
            QuadraticCandidate(P)


@pytest.fixture
def gpt():
    torch = pytest.importorskip("torch")
    from lyactl_torch import GPT, GPTConfig

    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=32, seq_len=8, d_model=32, n_layer=1, n_head=2, head_dim=16, mlp_hidden=64))


def test_lyactl_refuses_a_foreign_or_missing_optimizer(gpt):
    import torch
    from lyactl_torch import Lyactl

    other = torch.nn.Linear(3, 3)
    for opt in (torch.optim.SGD(other.parameters(), lr=0.1), None, "adam"):
        with pytest.raises(InvalidArgumentError, match="^optimizer:"):
            Lyactl(gpt, opt, None)
    part = torch.optim.SGD(list(gpt.parameters())[:2], lr=0.1)
    with pytest.raises(InvalidArgumentError, match="lacks"):
        Lyactl(gpt, part, None)


@pytest.mark.parametrize("loss", ["oops", None, True, [1.0], "torch.ones(3)"])
def test_step_refuses_a_loss_that_is_not_a_number(gpt, loss):
    import torch
    from lyactl_torch import Lyactl

    ctl = Lyactl(gpt, torch.optim.SGD(gpt.parameters(), lr=0.1), None, interval=1)
    loss = torch.ones(3) if loss == "torch.ones(3)" else loss
    with pytest.raises(InvalidArgumentError, match="^loss:"):
        ctl.step(loss)
    assert ctl.n_steps == 0  # nothing was counted
    ctl.step(torch.tensor(1.5))
    ctl.step(2)
    assert ctl.n_steps == 2


def test_an_unsupported_model_is_refused_with_the_supported_families():
    torch = pytest.importorskip("torch")
    from lyactl.errors import UnsupportedModelError
    from lyactl_torch import Lyactl

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    with pytest.raises(UnsupportedModelError) as info:
        Lyactl(model, torch.optim.SGD(model.parameters(), lr=0.1), None)
    msg = str(info.value)
    assert "Sequential" in msg and "lyactl_torch.GPT" in msg and "hf_adapters" in msg and "Llama" in msg


# ----------------------------------------------------------------- short runs say why
def _groups(n):
    return [Group(f"g{i}", GroupKind.MLP_BLOCK, 0, 10, 1.0, 0.5) for i in range(n)]


def _zero_stats(step, K, n):
    z = np.zeros(n)
    w = np.r_[0.0, np.ones(n - 1)]  # group 0 sits at exactly zero: collapse certifies it once it can
    return GroupStats(step, 0.1, 1.0, w, z.copy(), z.copy(), z.copy(), z.copy(), np.full(n, np.nan), interval=K)


@settings(max_examples=25, deadline=None)
@given(K=st.integers(1, 7), W=st.integers(3, 6), H=st.integers(1, 3), warm=st.integers(0, 60))
def test_the_earliest_decision_step_is_where_a_sure_collapse_is_decided(K, W, H, warm):
    cfg = ControllerConfig(monitors=MonitorConfig(window=W, lag=1), hysteresis=H, warmup_steps=warm,
                           allow_freeze=False)
    ctl = Controller(_groups(3), config=cfg)
    first = next((r * K for r in range(1, 60) if ctl.observe(_zero_stats(r * K, K, 3)).events), None)
    assert first == decision_schedule(cfg, K).earliest


def test_a_run_too_short_to_decide_warns_and_says_why(gpt):
    import torch
    from lyactl_torch import Lyactl
    from lyactl_torch.loop import ScheduleWarning

    ctl = Lyactl(gpt, torch.optim.SGD(gpt.parameters(), lr=0.1), None, interval=25, total_steps=200)
    cfg = ControllerConfig()  # window 8, hysteresis 3: 25 x 10 = step 250 at the earliest
    with pytest.warns(ScheduleWarning, match="250"):
        ctl.controller = Controller(ctl.backend.groups(), ctl.backend.constraints(), cfg)
    assert "no decision is possible" in ctl.summary() and "250" in ctl.summary()
    ok = Lyactl(gpt, torch.optim.SGD(gpt.parameters(), lr=0.1), None, interval=25, total_steps=400)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScheduleWarning)
        ok.controller = Controller(ok.backend.groups(), ok.backend.constraints(), cfg)
    assert "earliest possible decision at step 250" in ok.summary()


def test_the_demo_legend_explains_every_row():
    from lyactl.app.runreport import TABLE_LEGEND, format_table

    arm = {"arm": "a", "controlled": True, "flops_per_token_before": 2.0, "flops_per_token_after": 1.0,
           "train_flops": 1.0, "dense_train_flops": 2.0, "wall_s": 1.0, "val_bpb": 1.0, "val_bpb_stderr": 0.1,
           "n_params_after": 10, "events": [], "restored": [], "fpt": []}
    table = format_table({"summary": {"arms": [arm]}, "decisions": []})
    rows = [line.split("|")[0].strip() for line in table.splitlines()[2:] if "|" in line]
    legend = TABLE_LEGEND.splitlines()
    assert len(rows) == 8
    for row in rows:
        key = row.replace(" before", "").replace(" after", "")
        assert any(line.strip().startswith(key) for line in legend), row
    for word in ("margin", "collapse", "restored", "kept"):
        assert any(word in line for line in legend), word
