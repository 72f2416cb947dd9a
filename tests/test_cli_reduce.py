"""`lyactl reduce`: JSON fields, the written reduced system, the certificate, exit codes."""

import json

import numpy as np
import pytest

from lyactl.analysis.balanced import hinf_error
from lyactl.analysis.gramians import hankel_singular_values, real_output_realisation
from lyactl.app.cli import main
from strategies import random_complex


def _lru(tmp_path, n=6, seed=0, **extra):
    rng = np.random.default_rng(seed)
    lam = 0.9 * np.sqrt(rng.uniform(size=n)) * np.exp(2j * np.pi * rng.uniform(size=n))
    arrays = {"A": lam, "B": random_complex(rng, (n, 2)), "C": random_complex(rng, (2, n)), "D": rng.standard_normal(2)}
    arrays.update(extra)
    path = tmp_path / "sys.npz"
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path, arrays


def _json(capsys):
    out = capsys.readouterr().out
    assert out.count("\n") == 1  # exactly one JSON object
    return json.loads(out)


@pytest.mark.parametrize("real_output", [False, True])
def test_json_fields_and_written_system(tmp_path, capsys, real_output):
    path, s = _lru(tmp_path)
    out = tmp_path / "red.npz"
    argv = ["reduce", str(path), "--rank", "5", "--json", "--out", str(out)] + (["--real-output"] if real_output else [])
    assert main(argv) == 0
    r = _json(capsys)
    full = real_output_realisation(s["A"], s["B"], s["C"]) if real_output else (s["A"], s["B"], s["C"])
    np.testing.assert_allclose(r["hsv"], hankel_singular_values(*full), rtol=1e-8)
    assert r["rank"] == 5 and r["real_output"] is real_output
    assert r["bound"] == pytest.approx(2 * sum(r["hsv"][5:]))
    assert 0 < r["error"] <= r["bound"] and r["within_bound"] is True
    with np.load(out) as red:
        assert int(red["rank"]) == 5 and float(red["bound"]) == pytest.approx(r["bound"])
        assert red["A"].ndim == 1 and red["A"].shape[0] == r["modes_kept"]  # diagonal in, diagonal out
        reduced = (red["A"], red["B"], red["C"], red["D"])
    # the written system re-verifies: recompute its error independently of the CLI
    err = hinf_error((s["A"], s["B"], s["C"], s["D"]), reduced, real_output=real_output)
    assert err == pytest.approx(r["error"], rel=1e-9)


def test_tol_picks_the_energy_rank_and_text_output(tmp_path, capsys):
    path, _ = _lru(tmp_path)
    assert main(["reduce", str(path), "--tol", "0.1"]) == 0
    text = capsys.readouterr().out
    assert "within the bound" in text and "bound  2 * sum" in text


def test_dense_real_system(tmp_path, capsys):
    rng = np.random.default_rng(1)
    A = rng.standard_normal((5, 5))
    A *= 0.8 / np.max(np.abs(np.linalg.eigvals(A)))
    path = tmp_path / "dense.npz"
    np.savez(path, A=A, B=rng.standard_normal((5, 1)), C=rng.standard_normal((1, 5)))
    assert main(["reduce", str(path), "--rank", "2", "--json"]) == 0
    r = _json(capsys)
    assert r["modes_kept"] == 2 and r["error"] <= r["bound"]


@pytest.mark.parametrize("change, needle", [
    ({"A": np.array([0.5, 1.2, 0.1, 0.2, 0.3, 0.4])}, "A: "),               # unstable
    ({"B": np.full((6, 2), np.nan)}, "B: expected finite"),                 # NaN
    ({"C": np.ones((2, 5))}, "C: "),                                        # mismatched shape
    ({"D": np.ones(3)}, "D: "),
    ({"C": None}, "missing C"),
])
def test_bad_systems_exit_2_with_one_line(tmp_path, capsys, change, needle):
    path, _ = _lru(tmp_path, **change)
    assert main(["reduce", str(path), "--rank", "2", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and needle in captured.err


@pytest.mark.parametrize("argv_tail, needle", [
    (["--rank", "7"], "rank: "), (["--rank", "-1"], "rank: "), (["--tol", "1.5"], "--tol: "),
    (["--rank", "2", "--n-freq", "1"], "--n-freq: "),
])
def test_bad_options_exit_2(tmp_path, capsys, argv_tail, needle):
    path, _ = _lru(tmp_path)
    assert main(["reduce", str(path)] + argv_tail) == 2
    assert needle in capsys.readouterr().err


def test_unreadable_files_exit_2(tmp_path, capsys):
    assert main(["reduce", str(tmp_path / "missing.npz"), "--rank", "1"]) == 2
    assert "SYSTEM.npz" in capsys.readouterr().err
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    assert main(["reduce", str(junk), "--rank", "1"]) == 2
    assert "junk.npz" in capsys.readouterr().err
    pickled = tmp_path / "obj.npz"
    np.savez(pickled, A=np.array([{"a": 1}], dtype=object), B=np.ones((1, 1)), C=np.ones((1, 1)))
    assert main(["reduce", str(pickled), "--rank", "1"]) == 2
    assert "obj.npz" in capsys.readouterr().err
    assert main(["reduce", str(junk)]) == 2  # neither --rank nor --tol
