"""`lyactl rate`: one JSON object, exit codes by verdict, the certificate re-verifies from the
JSON alone (numpy), user errors exit 2 naming the argument."""

import json
import subprocess
import sys

import numpy as np
import pytest

from lyactl.analysis.lure import heavy_ball_system, tuned_heavy_ball
from lyactl.app.cli import main


def _run(capsys, argv):
    code = main(argv)
    out = capsys.readouterr()
    return code, out


def _lmi_from_json(cert):
    """The LMI rebuilt from the JSON with numpy alone (independent of lyactl.analysis.rates)."""
    A, B, C = (np.array(cert[k]) for k in "ABC")
    P, m, L, r2 = np.array(cert["P"]), cert["m"], cert["L"], cert["rho"] ** 2
    lam_s, lam_o = cert["multipliers"]["sector"], cert["multipliers"]["off_by_one"]
    n = A.shape[0]
    # v = (xi, zeta, u); eta+ = (A xi + B u, L C xi - u)
    Z = np.block([[A, np.zeros((n, 1)), B], [L * C, np.zeros((1, 1)), -np.ones((1, 1))]])
    E = np.eye(n + 1, n + 2)
    y, u, zeta = np.r_[C[0], 0, 0], np.r_[np.zeros(n + 1), 1], np.r_[np.zeros(n), 1, 0]
    p, q = u - m * y, L * y - u
    sector = (np.outer(p, q) + np.outer(q, p)) / 2
    obo = (np.outer(p, q - r2 * zeta) + np.outer(q - r2 * zeta, p)) / 2
    return Z.T @ P @ Z - r2 * E.T @ P @ E + lam_s * sector + lam_o * obo, P


@pytest.mark.parametrize("argv", [
    ["--optimizer", "gd", "--lr", "0.15"],
    ["--optimizer", "heavy-ball", "--lr", "0.1", "--momentum", "0.5"],
    ["--optimizer", "nesterov", "--lr", "0.1", "--momentum", "0.5"],
])
def test_holds_prints_one_json_object_whose_certificate_reverifies(capsys, argv):
    code, out = _run(capsys, ["rate", *argv, "--mu", "1", "--L", "10", "--json"])
    obj = json.loads(out.out)
    assert code == 0 and obj["verdict"] == "holds" and 0 < obj["rate"] < 1
    assert {"verdict", "rate", "method", "certificate"} <= set(obj)
    M, P = _lmi_from_json(obj["certificate"])
    assert obj["certificate"]["rho"] == obj["rate"] and obj["rate"] >= obj["quadratic_rate"]
    d = 1 / np.sqrt(-np.diag(M))
    assert np.linalg.eigvalsh(M * np.outer(d, d))[-1] < 0 and np.linalg.eigvalsh(P)[0] > 0


def test_gd_rate_matches_closed_form(capsys):
    code, out = _run(capsys, ["rate", "--optimizer", "gd", "--lr", "0.05", "--mu", "2", "--L", "30", "--json"])
    assert code == 0 and abs(json.loads(out.out)["rate"] - max(abs(1 - 0.05 * 2), abs(1 - 0.05 * 30))) <= 1e-4


def test_unknown_exits_3_with_null_rate(capsys):
    a, b = tuned_heavy_ball(1.0, 100.0)
    code, out = _run(capsys, ["rate", "--optimizer", "heavy-ball", "--lr", repr(a), "--momentum", repr(b),
                              "--mu", "1", "--L", "100", "--json"])
    obj = json.loads(out.out)
    assert code == 3 and obj["verdict"] == "unknown" and obj["rate"] is None and obj["certificate"] is None


def test_fails_exits_1_with_a_quadratic_counterexample(capsys):
    code, out = _run(capsys, ["rate", "--optimizer", "gd", "--lr", "0.3", "--mu", "1", "--L", "10", "--json"])
    obj = json.loads(out.out)
    lam = obj["worst_curvature"]
    assert code == 1 and obj["verdict"] == "fails" and 1 <= lam <= 10 and abs(1 - 0.3 * lam) >= 1


def test_system_file_agrees_with_builtin(capsys, tmp_path):
    hb = heavy_ball_system(0.1, 0.5)
    path = tmp_path / "hb.npz"
    np.savez(path, A=hb.A, B=hb.B.ravel(), C=hb.C.ravel())
    code, out = _run(capsys, ["rate", "--system", str(path), "--mu", "1", "--L", "10", "--json"])
    _, ref = _run(capsys, ["rate", "--optimizer", "heavy-ball", "--lr", "0.1", "--momentum", "0.5",
                           "--mu", "1", "--L", "10", "--json"])
    assert code == 0 and json.loads(out.out)["rate"] == pytest.approx(json.loads(ref.out)["rate"], abs=1e-9)


@pytest.mark.parametrize("argv, name", [
    (["--optimizer", "gd", "--lr", "0.1", "--mu", "3", "--L", "1"], "--mu"),
    (["--optimizer", "gd", "--lr", "0.1", "--mu", "-1", "--L", "1"], "--mu"),
    (["--optimizer", "gd", "--lr", "0.1", "--mu", "nan", "--L", "1"], "--mu"),
    (["--optimizer", "gd", "--lr", "0.1", "--mu", "1", "--L", "inf"], "--L"),
    (["--optimizer", "gd", "--lr", "0.1", "--mu", "0", "--L", "0"], "--L"),
    (["--optimizer", "gd", "--lr", "-0.1", "--mu", "1", "--L", "2"], "--lr"),
    (["--optimizer", "gd", "--lr", "nan", "--mu", "1", "--L", "2"], "--lr"),
    (["--optimizer", "gd", "--mu", "1", "--L", "2"], "--lr"),
    (["--optimizer", "gd", "--lr", "0.1", "--momentum", "0.5", "--mu", "1", "--L", "2"], "--momentum"),
    (["--optimizer", "heavy-ball", "--lr", "0.1", "--mu", "1", "--L", "2"], "--momentum"),
    (["--optimizer", "nesterov", "--lr", "0.1", "--mu", "1", "--L", "2"], "--momentum"),
    (["--optimizer", "nesterov", "--lr", "0.1", "--momentum", "1.0", "--mu", "1", "--L", "2"], "--momentum"),
    (["--optimizer", "nesterov", "--lr", "0.1", "--momentum", "nan", "--mu", "1", "--L", "2"], "--momentum"),
    (["--system", "missing.npz", "--mu", "1", "--L", "2"], "--system"),
    (["--optimizer", "gd", "--lr", "0.1", "--L", "2"], "--mu"),
])
def test_bad_input_exits_2_naming_the_argument(capsys, argv, name):
    code, out = _run(capsys, ["rate", *argv, "--json"])
    assert code == 2 and out.out == "" and name in out.err and "Traceback" not in out.err
    assert len(out.err.strip().splitlines()) == 1


def test_bad_system_files_exit_2(capsys, tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    short = tmp_path / "short.npz"
    np.savez(short, A=np.eye(2), B=np.ones(2))
    shape = tmp_path / "shape.npz"
    np.savez(shape, A=np.eye(2), B=np.ones(3), C=np.ones(2))
    nan = tmp_path / "nan.npz"
    np.savez(nan, A=np.eye(2) * np.nan, B=np.ones(2), C=np.ones(2))
    for path, word in ((junk, "--system"), (short, "--system"), (shape, "B"), (nan, "A")):
        code, out = _run(capsys, ["rate", "--system", str(path), "--mu", "1", "--L", "2"])
        assert code == 2 and word in out.err, (path, out.err)
    code, out = _run(capsys, ["rate", "--system", str(short), "--lr", "0.1", "--mu", "1", "--L", "2"])
    assert code == 2 and "--lr" in out.err


def test_missing_clarabel_exits_2_naming_the_extra(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "clarabel", None)
    code, out = _run(capsys, ["rate", "--optimizer", "gd", "--lr", "0.1", "--mu", "1", "--L", "10"])
    assert code == 2 and "lyactl[sdp]" in out.err and "torch" not in out.err


def test_text_output_and_subprocess_entry_point():
    proc = subprocess.run([sys.executable, "-m", "lyactl", "rate", "--optimizer", "gd", "--lr", "0.1",
                           "--mu", "1", "--L", "10"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "verdict: holds" in proc.stdout and "certificate.P" in proc.stdout


def test_a_fresh_process_never_imports_cvxpy():
    """The cold-start cost of `lyactl rate` (issue 18 target): cvxpy's import alone took ~1 s."""
    code = ("import sys; from lyactl.app.cli import main; "
            "rc = main(['rate', '--optimizer', 'nesterov', '--lr', '0.1', '--momentum', '0.5', '--mu', '1', "
            "'--L', '10', '--json']); assert rc == 0, rc; assert 'clarabel' in sys.modules; "
            "assert 'cvxpy' not in sys.modules, 'cvxpy imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
