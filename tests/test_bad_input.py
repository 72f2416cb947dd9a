"""Bad input everywhere a user gives input: a lyactl error naming the input, no traceback.

CLI (``lyactl verify``, fuzzed with hypothesis, run in process through ``main(argv)``),
configs, Lyapunov candidates, matrices, model types, data files (corpus, evaluation data,
decision logs, checkpoints). Each case checks the error's type (a lyactl error, which also
subclasses the matching built-in) and that its message names the input.
"""

import io
import json
import lzma
import math
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lyactl.control.budget import BudgetConfig
from lyactl.analysis.candidates import CallableCandidate, ExprCandidate, QuadraticCandidate, as_candidate
from lyactl.app.cli import main
from lyactl.control.controller import ControllerConfig
from lyactl.control.decision_log import read_log
from lyactl.errors import (CheckpointError, DataFileError, InvalidArgumentError, LyactlError, NonFiniteError,
                           ShapeError, UnresolvedSymbolError, UnsupportedModelError)
from lyactl.app.evaldata import read_jsonl
from lyactl.control.guard import GuardConfig
from lyactl.analysis.lyapunov import verify_dlyap
from lyactl.control.monitors import MonitorConfig
from lyactl.analysis.systems import as_square_matrix


# ---------------------------------------------------------------- CLI: lyactl verify
def run_cli(argv):
    err, out = io.StringIO(), io.StringIO()
    with redirect_stderr(err), redirect_stdout(out):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse's own --help / --version exits
            code = exc.code
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def matrix_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("matrices")
    files = {
        "good.json": json.dumps([[0.5, 0.1], [0.0, 0.3]]),
        "nonsquare.json": json.dumps([[1, 2, 3], [4, 5, 6]]),
        "ragged.json": json.dumps([[1, 2], [3]]),
        "strings.json": json.dumps([["a", "b"], ["c", "d"]]),
        "nan.json": "[[NaN, 0], [0, 1]]",
        "broken.json": "[[1, 2], [3,",
        "empty.json": "[]",
        "scalar.json": "3",
    }
    for name, text in files.items():
        (d / name).write_text(text)
    np.save(d / "object.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)  # needs pickle to load
    np.save(d / "ok.npy", np.eye(3) * 0.5)
    (d / "garbage.npy").write_bytes(b"\x93NUMPY garbage")
    return d


def test_cli_matrix_errors_name_the_argument(matrix_files):
    code, out, _ = run_cli(["verify", "--matrix", str(matrix_files / "good.json"), "--json"])
    assert code == 0 and json.loads(out)["verdict"] == "holds"
    for name in ("nonsquare.json", "ragged.json", "strings.json", "nan.json", "broken.json", "empty.json",
                 "scalar.json", "object.npy", "garbage.npy", "missing.json"):
        code, _, err = run_cli(["verify", "--matrix", str(matrix_files / name)])
        assert code == 2, name
        assert "--matrix" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, (name, err)


@pytest.mark.parametrize("argv,name", [
    (["verify", "--optimizer", "gd", "--lr", "nan", "--curvature", "1"], "--lr"),
    (["verify", "--optimizer", "gd", "--lr", "-1", "--curvature", "1"], "--lr"),
    (["verify", "--optimizer", "gd", "--lr", "0.1"], "--curvature"),
    (["verify", "--optimizer", "adam", "--lr", "0.1", "--curvature", "1", "--momentum", "0.9"], "--momentum"),
    (["verify", "--optimizer", "gd", "--lr", "0.1", "--curvature", "1", "--beta1", "0.9"], "--beta1"),
    (["verify", "--optimizer", "sgd", "--lr", "0.1", "--curvature", "1"], "--optimizer"),
    (["verify", "--optimizer", "gd", "--lr", "x", "--curvature", "1"], "--lr"),
    (["verify"], "--optimizer"),
    (["verify", "--optimizer", "gd", "--matrix", "m.json"], "--matrix"),
])
def test_cli_usage_errors(argv, name):
    code, _, err = run_cli(argv)
    assert code == 2 and name in err and "Traceback" not in err


_OPTS = ["--optimizer", "--matrix", "--lr", "--momentum", "--beta1", "--curvature", "--weight-decay", "--json"]
_VALUES = st.one_of(
    st.sampled_from(["gd", "heavy-ball", "nesterov", "adam", "sgd", "", "-", "--", "nan", "inf", "-inf", "1e400",
                     "0", "-0.5", "0.9", "1", "2", "x", "--lr", "\x00", "é"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=8),
)
_ARG = st.one_of(st.sampled_from(_OPTS), _VALUES)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=st.lists(_ARG, max_size=8), files=st.lists(st.sampled_from(
    ["good.json", "nonsquare.json", "nan.json", "broken.json", "object.npy", "ok.npy", "nope.json", "."]),
    max_size=2))
def test_cli_verify_fuzz_never_tracebacks(matrix_files, args, files):
    argv = ["verify", *args]
    for f in files:
        argv += ["--matrix", str(matrix_files / f)]
    code, _, err = run_cli(argv)
    assert code in (0, 1, 2), (argv, code, err)
    assert "Traceback" not in err, (argv, err)
    if code == 2:
        assert err.startswith("lyactl: error:"), (argv, err)


def test_cli_unknown_command():
    code, _, err = run_cli(["frobnicate"])
    assert code == 2 and "frobnicate" in err


# ---------------------------------------------------------------- configs
@pytest.mark.parametrize("make,name", [
    (lambda: ControllerConfig(hysteresis=0), "hysteresis"),
    (lambda: ControllerConfig(warmup_steps=-1), "warmup_steps"),
    (lambda: ControllerConfig(model_flops=math.nan), "model_flops"),
    (lambda: GuardConfig(window=0), "window"),
    (lambda: GuardConfig(tol_rel=-1.0), "tol_rel"),
    (lambda: GuardConfig(z=math.nan), "z"),
    (lambda: MonitorConfig(window=2), "window"),
    (lambda: MonitorConfig(r_max=1.5), "r_max"),
    (lambda: MonitorConfig(lag=0), "lag"),
    (lambda: BudgetConfig(target=1.5, total_steps=10), "target"),
])
def test_configs_name_the_bad_field(make, name):
    with pytest.raises(InvalidArgumentError, match=name):
        make()


# ---------------------------------------------------------------- candidates and matrices
@pytest.mark.parametrize("make,err,name", [
    (lambda: QuadraticCandidate(np.ones((2, 3))), ShapeError, "P"),
    (lambda: QuadraticCandidate(np.array([[1.0, 2.0], [0.0, 1.0]])), InvalidArgumentError, "P"),
    (lambda: QuadraticCandidate(sp.Matrix([[1, 0, 0], [0, 1, 0]])), ShapeError, "P"),
    (lambda: CallableCandidate(3.0), InvalidArgumentError, "fn"),
    (lambda: CallableCandidate(lambda x: "high").value(np.zeros(2)), InvalidArgumentError, "V"),
    (lambda: ExprCandidate(sp.Symbol("y") ** 2, (sp.Symbol("x"),)), InvalidArgumentError, "V"),
    (lambda: ExprCandidate(sp.Symbol("x"), ("x",)), InvalidArgumentError, "state"),
    (lambda: ExprCandidate(sp.Symbol("x") * sp.Symbol("c"), (sp.Symbol("x"),)).value(np.ones(1)),
     UnresolvedSymbolError, "V"),
    (lambda: ExprCandidate(sp.Symbol("x") ** 2, (sp.Symbol("x"),)).value(np.ones(3)), ShapeError, "x"),
    (lambda: as_candidate("x^T P x"), InvalidArgumentError, "candidate"),
])
def test_candidates_name_the_bad_input(make, err, name):
    with pytest.raises(err, match=name):
        make()


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 4), m=st.integers(1, 4))
def test_non_square_matrices_are_shape_errors(n, m):
    A = np.zeros((n, m))
    if n == m:
        assert as_square_matrix(A, "A").shape == (n, n)
        return
    with pytest.raises(ShapeError, match="A: expected"):
        as_square_matrix(A, "A")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_matrices_are_refused(bad):
    A = np.eye(3) * 0.5
    A[1, 2] = bad
    with pytest.raises(NonFiniteError, match="A"):
        as_square_matrix(A, "A")
    with pytest.raises(LyactlError):
        verify_dlyap(A)


@pytest.mark.parametrize("bad", [[["a"]], [], 5.0, None, [[1j, 0], [0, 1]], [[1, 2, 3]], [[1, 2], [3]]])
def test_malformed_matrices_are_lyactl_errors(bad):
    with pytest.raises(LyactlError, match="M"):
        as_square_matrix(bad, "M")


# ---------------------------------------------------------------- data files
def write_xz(path, lines):
    with lzma.open(path, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")


@pytest.mark.parametrize("lines,needle", [
    (['{"src": "w", "text": "ok"}', '{"text": '], ":2"),
    (['{"src": "a"}'], "text"),
    (['{"src": "w", "text": 5}'], "str"),
    (['{"text": "no source"}'], "src"),
    (['[1, 2]'], ":1"),
])
def test_corpus_reader_names_file_and_line(tmp_path, lines, needle):
    corpus = pytest.importorskip("lyactl_torch.corpus")
    write_xz(tmp_path / "web.jsonl.xz", lines)
    with pytest.raises(DataFileError, match="web.jsonl.xz") as info:
        corpus.load_documents(tmp_path)
    assert needle in str(info.value)


def test_corpus_folder_errors(tmp_path):
    corpus = pytest.importorskip("lyactl_torch.corpus")
    with pytest.raises(DataFileError, match="corpus folder"):
        corpus.load_documents(tmp_path / "nope")
    with pytest.raises(DataFileError, match="no \\*.jsonl.xz"):
        corpus.load_documents(tmp_path)
    with pytest.raises(InvalidArgumentError, match="val_fraction"):
        corpus.split_documents([], 0.7, 0)
    with pytest.raises(InvalidArgumentError, match="tokens"):
        corpus.Batches(np.zeros(10, np.int32), 8, 4, 0).batch(0)


def test_evaldata_and_decision_log_readers(tmp_path):
    bad = tmp_path / "items.jsonl"
    bad.write_text('{"ctx": "a", "label": 0}\n{"ctx": \n')
    with pytest.raises(DataFileError, match="items.jsonl:2"):
        list(read_jsonl(bad, {"ctx": str, "label": int}))
    bad.write_text('{"ctx": "a"}\n')
    with pytest.raises(DataFileError, match="label"):
        list(read_jsonl(bad, {"ctx": str, "label": int}))
    with pytest.raises(DataFileError, match="path"):
        list(read_jsonl(tmp_path / "missing.jsonl", {}))
    log = tmp_path / "log.jsonl"
    log.write_text('{"type": "event"}\nnot json\n')
    with pytest.raises(DataFileError, match="log.jsonl:2"):
        read_log(log)


# ---------------------------------------------------------------- torch inputs
def test_unsupported_models_and_checkpoints(tmp_path):
    torch = pytest.importorskip("torch")
    import lyactl_torch as L
    from lyactl_torch import run_state

    lin = torch.nn.Linear(4, 4)
    with pytest.raises(UnsupportedModelError, match="model"):
        L.TorchBackend(lin, torch.optim.SGD(lin.parameters(), lr=0.1))
    cfg = L.GPTConfig(vocab_size=11, seq_len=8, d_model=64, n_layer=1, n_head=2, head_dim=32)
    model = L.GPT(cfg)
    model.blocks[0].extra = torch.nn.Conv1d(2, 2, 1)
    with pytest.raises(UnsupportedModelError, match="blocks.0.extra"):
        L.TorchBackend(model, torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(InvalidArgumentError, match="n_kv_head"):
        L.GPTConfig(vocab_size=11, seq_len=8, d_model=64, n_layer=1, n_head=3, n_kv_head=2)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        L.load(tmp_path / "junk.pt")
    (tmp_path / "run-00000004.json").write_text('{"format": "lyactl_torch.run/1", "step": 4, '
                                                '"payload": "../../etc/passwd", "sha256": "0", "bytes": 1}')
    with pytest.raises(CheckpointError, match="payload"):
        run_state.load_run(tmp_path)


def test_checkpoint_load_of_short_junk(tmp_path):
    L = pytest.importorskip("lyactl_torch")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="junk.pt"):
        L.load(tmp_path / "junk.pt")
