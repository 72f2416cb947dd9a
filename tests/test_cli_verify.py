"""`lyactl verify`: JSON output vs independent eigenvalues; user errors exit 2."""

import contextlib
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from lyactl.app.cli import main
from lyactl.analysis.optimizers import OptimizerParams, adam, gd, heavy_ball, nesterov

MODELS = {"gd": gd(), "heavy-ball": heavy_ball(), "nesterov": nesterov(), "adam": adam()}


def _rho(opt, lr, beta, lam, wd):
    return float(np.max(np.abs(np.linalg.eigvals(MODELS[opt].matrix(lam, OptimizerParams(lr, beta, wd))))))


def _edge(opt, lr, beta, wd):
    """Upper stability edge in lam by bisection on numpy's spectral radius (independent)."""
    lo, hi = 1e-9, 1.0
    while _rho(opt, lr, beta, hi, wd) < 1:
        hi *= 2
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _rho(opt, lr, beta, mid, wd) < 1 else (lo, mid)
    return lo


def _run(capsys, argv):
    code = main(argv)
    out = capsys.readouterr()
    return code, out


def _args(opt, lr, beta, lam, wd):
    argv = ["verify", "--optimizer", opt, "--lr", repr(lr), "--curvature", repr(lam),
            "--weight-decay", repr(wd), "--json"]
    if opt == "adam":
        argv += ["--beta1", repr(beta)]
    elif opt != "gd":
        argv += ["--momentum", repr(beta)]
    return argv


@settings(max_examples=15, deadline=None)
@given(st.sampled_from(sorted(MODELS)), st.floats(0.01, 1.0), st.floats(0.0, 0.95),
       st.floats(0.0, 0.2), st.sampled_from([0.3, 0.97, 1.03, 3.0]))
def test_json_matches_independent_eigenvalues(opt, lr, beta, wd, frac):
    beta = 0.0 if opt == "gd" else beta
    lam = frac * _edge(opt, lr, beta, wd)  # inside, just inside, just outside, outside
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(_args(opt, lr, beta, lam, wd))
    res = json.loads(buf.getvalue())
    assert code == {"holds": 0, "fails": 1, "unknown": 3}[res["verdict"]]  # the CLI's exit codes
    rho = _rho(opt, lr, beta, lam, wd)
    assert res["verdict"] == ("holds" if rho < 1 else "fails")
    assert res["margin"] == pytest.approx(1 - rho, abs=1e-9)
    assert res["optimizer"] == opt and isinstance(res["region"], str) and "eta*lam" in res["region"]


def test_text_output_and_boundary(capsys):
    code, out = _run(capsys, ["verify", "--optimizer", "heavy-ball", "--lr", "0.1", "--momentum", "0.9",
                              "--curvature", "25"])
    assert code == 0 and "verdict: holds" in out.out and "margin:" in out.out
    code, out = _run(capsys, ["verify", "--optimizer", "gd", "--lr", "0.5", "--curvature", "4", "--json"])
    assert json.loads(out.out)["verdict"] == "unknown"  # eta*lam = 2 exactly


@pytest.mark.parametrize("argv, name", [
    (["verify", "--optimizer", "gd", "--lr", "-0.1", "--curvature", "1"], "--lr"),
    (["verify", "--optimizer", "gd", "--curvature", "1"], "--lr"),
    (["verify", "--optimizer", "heavy-ball", "--lr", "0.1", "--momentum", "1.5", "--curvature", "1"], "--momentum"),
    (["verify", "--optimizer", "sgd", "--lr", "0.1", "--curvature", "1"], "--optimizer"),
    (["verify", "--optimizer", "gd", "--lr", "nan", "--curvature", "1"], "--lr"),
    (["verify", "--optimizer", "gd", "--lr", "0.1", "--curvature", "1", "--beta1", "0.9"], "--beta1"),
    (["verify", "--optimizer", "gd", "--lr", "0.1", "--curvature", "1", "--weight-decay", "-1"], "--weight-decay"),
    (["verify", "--matrix", "/nonexistent/A.json"], "--matrix"),
    (["verify"], "--optimizer"),
])
def test_user_errors_exit_2_with_one_line(capsys, argv, name):
    code, out = _run(capsys, argv)
    assert code == 2
    assert name in out.err and "Traceback" not in out.err and len(out.err.strip().splitlines()) == 1


@pytest.mark.parametrize("suffix", [".json", ".npy"])
@pytest.mark.parametrize("rho", [0.5, 1.5])
def test_matrix_file(capsys, tmp_path, suffix, rho):
    rng = np.random.default_rng(7)
    A = rng.standard_normal((4, 4))
    A *= rho / np.max(np.abs(np.linalg.eigvals(A)))
    path = tmp_path / f"A{suffix}"
    np.save(path, A) if suffix == ".npy" else path.write_text(json.dumps(A.tolist()))
    code, out = _run(capsys, ["verify", "--matrix", str(path), "--json"])
    res = json.loads(out.out)
    assert res["verdict"] == ("holds" if rho < 1 else "fails") and code == (0 if rho < 1 else 1)
    assert res["margin"] == pytest.approx(1 - rho, abs=1e-9)


def test_bad_matrix_file(capsys, tmp_path):
    path = tmp_path / "A.json"
    path.write_text("[[1, 2, 3], [4, 5, 6]]")
    code, out = _run(capsys, ["verify", "--matrix", str(path)])
    assert code == 2 and "--matrix" in out.err and "square" in out.err


def test_python_dash_m():
    proc = subprocess.run([sys.executable, "-m", "lyactl", "verify", "--optimizer", "adam", "--lr", "0.01",
                           "--curvature", "100", "--json"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["verdict"] == ("holds" if _rho("adam", 0.01, 0.9, 100, 0) < 1 else "fails")
