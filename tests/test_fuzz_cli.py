"""Fuzzing the CLI (issue 17): hypothesis-drawn arguments, matrix files, config files and run
folders. Whatever the input: no traceback, the documented exit code (one line on stderr for
bad input), and no pre-existing file in an output folder changes.

In-process ``main()`` calls (stdout/stderr captured per example); two subprocess runs check
the real entry point.
"""

import contextlib
import hashlib
import io
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from lyactl.app import exit_codes
from lyactl.app.cli import main

ROOT = Path(__file__).resolve().parent.parent
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

EXTREME = st.sampled_from([0.0, -0.0, 1e-308, 5e-324, 1e308, -1e308, 1.7976931348623157e308, math.inf, -math.inf,
                           math.nan, 1.0, 0.5, -1.0, 0.9999999999999999, 2.0])
FLOATS = st.one_of(EXTREME, st.floats(allow_nan=True, allow_infinity=True), st.floats(-10, 10))
NUMBER_TEXT = st.one_of(FLOATS.map(repr), st.sampled_from(["abc", "", "1e309", "-1e309", "nan", "0x10", "1,5",
                                                          "--", "None", "[1]", "1e-400"]))


def _call(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's --help only
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def _no_traceback(code: int, out: str, err: str, allowed: set[int]) -> None:
    assert "Traceback" not in out + err, err
    assert code in allowed, (code, err[-500:])
    if code == exit_codes.BAD_INPUT:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("lyactl: error:"), err


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------- verify: options
@FUZZ
@given(opt=st.sampled_from(["gd", "heavy-ball", "nesterov", "adam", None]),
       values=st.fixed_dictionaries({}, optional={k: NUMBER_TEXT for k in ("--lr", "--curvature", "--momentum",
                                                                         "--beta1", "--weight-decay")}),
       as_json=st.booleans())
def test_verify_options(opt, values, as_json):
    argv = ["verify"] + (["--optimizer", opt] if opt else []) + [x for kv in values.items() for x in kv]
    argv += ["--json"] if as_json else []
    code, out, err = _call(argv)
    _no_traceback(code, out, err, {exit_codes.OK, exit_codes.FAILS, exit_codes.BAD_INPUT, exit_codes.UNKNOWN})
    if code != exit_codes.BAD_INPUT and as_json:
        res = json.loads(out)  # exactly one JSON object
        assert code == {"holds": 0, "fails": 1, "unknown": 3}[res["verdict"]]


# ----------------------------------------------------------------- verify: matrix files
JSONISH = st.recursive(st.one_of(st.none(), st.booleans(), FLOATS, st.integers(-10**30, 10**30), st.text(max_size=5)),
                       lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=3), inner,
                                                                                            max_size=3)),
                       max_leaves=20)
SQUARE = st.integers(1, 4).flatmap(lambda n: st.lists(st.lists(FLOATS, min_size=n, max_size=n), min_size=n, max_size=n))


@FUZZ
@given(content=st.one_of(SQUARE, JSONISH), suffix=st.sampled_from([".json", ".txt", ".npy"]))
def test_verify_matrix_files(tmp_path, content, suffix):
    path = tmp_path / f"A{suffix}"
    path.write_text(json.dumps(content))  # a .npy holding JSON text is a malformed .npy
    code, out, err = _call(["verify", "--matrix", str(path), "--json"])
    _no_traceback(code, out, err, {exit_codes.OK, exit_codes.FAILS, exit_codes.BAD_INPUT, exit_codes.UNKNOWN})
    if code != exit_codes.BAD_INPUT:
        assert json.loads(out)["verdict"] in ("holds", "fails", "unknown")


# ----------------------------------------------------------------- train: config files into an existing folder
KEYS = {"model": ["d_model", "n_layer", "n_head", "head_dim", "mlp_hidden", "seq_len", "vocab_size", "bogus"],
        "data": ["corpus", "val_fraction", "split_seed", "batch_size", "val_docs", "extra"],
        "training": ["steps", "lr", "warmup", "min_lr_frac", "weight_decay", "grad_clip", "device", "bf16", "seed"],
        "controller": ["enabled", "interval", "block", "budget", "u_max", "warmup_frac", "last_frac", "window",
                       "lag", "hysteresis", "typo"],
        "nonsense": ["a"]}
TOML_VALUE = st.one_of(st.integers(-3, 10**6), st.sampled_from(["inf", "-inf", "nan", "1e308", "-0.0", "1e-308"]),
                       st.floats(-1e3, 1e3, allow_nan=False).map(repr), st.sampled_from(["true", "false"]),
                       st.sampled_from(['"demo"', '"cpu"', '"tpu"', '""', '"/no/such/folder"', "[1, 2]", "{a = 1}"]))


def _toml(sections: dict) -> str:
    lines = []
    for section, kv in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {v}" for k, v in kv.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def existing_run(tmp_path_factory):
    """A folder that already holds a run's files (contents do not matter to the refusal)."""
    out = tmp_path_factory.mktemp("fuzz") / "run"
    out.mkdir()
    for name in ("decisions.jsonl", "metrics.jsonl", "traces.json", "summary.json", "config.json"):
        (out / name).write_text(f'{{"keep": "{name}"}}\n')
    return out


@FUZZ
@given(sections=st.dictionaries(st.sampled_from(sorted(KEYS)), st.none(), max_size=4).flatmap(
    lambda secs: st.fixed_dictionaries({s: st.dictionaries(st.sampled_from(KEYS[s]), TOML_VALUE, max_size=4)
                                        for s in secs})),
       suffix=st.sampled_from([".toml", ".toml", ".yaml", ".cfg"]))
@example(sections={}, suffix=".toml")  # a valid config: refused only because the folder holds a run
def test_train_configs_never_touch_an_existing_run(existing_run, sections, suffix):
    pytest.importorskip("torch")
    before = _hashes(existing_run)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / f"c{suffix}"
        cfg.write_text(_toml(sections))
        code, out, err = _call(["train", str(cfg), "--out", str(existing_run), "--no-progress"])
    _no_traceback(code, out, err, {exit_codes.BAD_INPUT})  # a valid config is refused: the folder holds a run
    assert _hashes(existing_run) == before


@FUZZ
@given(preset=st.sampled_from(["tiny", "small", "large", "huge", ""]),
       device=st.one_of(st.none(), st.sampled_from(["cpu", "cuda", "cuda:7", "tpu", "mps", "", "cpu:0", "meta",
                                                    "cuda:-1", "xla"])),
       steps=st.one_of(st.none(), st.integers(-5, 10**9).map(str), st.sampled_from(["1.5", "abc", "1e3"])))
@example(preset="tiny", device=None, steps=None)  # valid options: refused only because the folder holds a run
def test_demo_options_never_touch_an_existing_run(existing_run, preset, device, steps):
    pytest.importorskip("torch")
    before = _hashes(existing_run)
    argv = ["demo", "--preset", preset, "--out", str(existing_run), "--no-progress"]
    argv += ["--device", device] if device is not None else []
    argv += ["--steps", steps] if steps is not None else []
    code, out, err = _call(argv)
    _no_traceback(code, out, err, {exit_codes.BAD_INPUT})
    assert _hashes(existing_run) == before


# ----------------------------------------------------------------- report: fuzzed run folders
@FUZZ
@given(summary=st.one_of(JSONISH, st.fixed_dictionaries({"arms": st.lists(st.dictionaries(
           st.sampled_from(["arm", "controlled", "events", "train_flops", "val_bpb", "extra"]), JSONISH,
           max_size=5), max_size=3)})),
       log=st.lists(st.one_of(JSONISH.map(json.dumps), st.text(max_size=20)), max_size=4),
       manifest=st.one_of(st.none(), JSONISH))
def test_report_on_fuzzed_folders_fails_cleanly_and_writes_nothing(summary, log, manifest):
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        (run / "summary.json").write_text(json.dumps(summary))
        (run / "decisions.jsonl").write_text("\n".join(log))
        if manifest is not None:
            (run / "manifest.json").write_text(json.dumps(manifest))
        before = _hashes(run)
        code, out, err = _call(["report", str(run)])
        _no_traceback(code, out, err, {exit_codes.FAILS, exit_codes.BAD_INPUT})
        assert _hashes(run) == before


# ----------------------------------------------------------------- the real entry point
@pytest.mark.parametrize("argv", [["verify", "--optimizer", "gd", "--lr", "1e308", "--curvature", "1e308"],
                                  ["train", "no-such-config.toml"]])
def test_the_console_entry_point_gives_one_line(argv, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "backends")])}
    proc = subprocess.run([sys.executable, "-m", "lyactl", *argv], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == exit_codes.BAD_INPUT
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written
