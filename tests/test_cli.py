"""`lyactl train | eval | report | demo --help`: a tiny config end to end, eval on the
fixtures, and user errors (exit 2, one line naming the key, no traceback)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lyactl.app.cli import build_parser, main
from lyactl.app.runconfig import RunConfig, load_run_config, run_config_from_dict

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "data"

TINY = """
[model]
d_model = 32
n_layer = 2
n_head = 2
mlp_hidden = 64
seq_len = 16
vocab_size = 280

[data]
batch_size = 4
val_docs = 1

[training]
steps = 12
warmup = 2
log_every = 4

[controller]
interval = 2
window = 3
lag = 1
block = 32
"""


@pytest.mark.parametrize("command", ["verify", "demo", "train", "eval", "report"])
def test_every_subcommand_has_help(command, capsys):
    if command == "eval":  # delegated to lyactl_torch.evaluate's own parser
        pytest.importorskip("torch")
        assert main([command, "--help"]) == 0
    else:
        with pytest.raises(SystemExit) as exc:
            main([command, "--help"])
        assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: lyactl" in out and len(out.splitlines()) >= 5
    assert command in build_parser().format_help()


def _bad(tmp_path, text, suffix=".toml"):
    path = tmp_path / f"bad{suffix}"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, key", [
    ("[training]\nlr = -1\n", "training.lr"),
    ("[training]\nsteps = 1.5\n", "training.steps"),
    ("[model]\nwidth = 3\n", "model.width"),
    ("[optimiser]\nlr = 1\n", "optimiser"),
    ("[controller]\nbudget = 1.5\n", "controller.budget"),
    ("[controller]\nwindow = 4\nlag = 4\n", "controller.lag"),
    ("[controller]\nwarmup_frac = 0.3\nramp_end_frac = 0.2\n", "controller.ramp_end_frac"),
    ("[training]\nsteps = 10\nwarmup = 20\n", "training.warmup"),
    ("[data]\nbatch_size = true\n", "data.batch_size"),
])
def test_bad_config_exits_2_naming_the_key(tmp_path, capsys, text, key):
    assert main(["train", str(_bad(tmp_path, text)), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and key in err and "Traceback" not in err
    assert not (tmp_path / "run" / "summary.json").exists()


def test_yaml_and_toml_give_the_same_config(tmp_path):
    pytest.importorskip("yaml")
    toml_cfg = load_run_config(_bad(tmp_path, TINY))
    yaml_text = "model: {d_model: 32, n_layer: 2, n_head: 2, mlp_hidden: 64, seq_len: 16, vocab_size: 280}\n" \
                "data: {batch_size: 4, val_docs: 1}\ntraining: {steps: 12, warmup: 2, log_every: 4}\n" \
                "controller: {interval: 2, window: 3, lag: 1, block: 32}\n"
    assert load_run_config(_bad(tmp_path, yaml_text, ".yaml")) == toml_cfg
    assert run_config_from_dict(toml_cfg.to_dict()) == toml_cfg
    assert run_config_from_dict({}) == RunConfig()


def test_yaml_without_pyyaml_is_a_user_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "yaml", None)
    assert main(["train", str(_bad(tmp_path, "training: {steps: 3}\n", ".yaml"))]) == 2
    assert "PyYAML" in capsys.readouterr().err


def test_unreadable_inputs_exit_2(tmp_path, capsys):
    assert main(["train", str(tmp_path / "missing.toml")]) == 2
    assert main(["train", str(_bad(tmp_path, "[model\n"))]) == 2
    assert main(["report", str(tmp_path)]) == 2
    assert main(["demo", "--steps", "0"]) == 2
    assert main(["demo", "--preset", "huge"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and all(line.startswith("lyactl: error:") for line in err)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    pytest.importorskip("torch")
    tmp = tmp_path_factory.mktemp("train")
    (tmp / "tiny.toml").write_text(TINY)
    code = main(["train", str(tmp / "tiny.toml"), "--out", str(tmp / "run"), "--no-progress"])
    return code, tmp / "run"


def test_train_writes_a_run_folder_that_reports(trained, capsys):
    code, run = trained
    assert code == 0
    summary = json.loads((run / "summary.json").read_text())
    (arm,) = summary["arms"]
    assert arm["arm"] == "lyactl" and arm["steps"] == 12
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [4, 8, 12]
    assert (run / "metrics.csv").read_text().splitlines()[0].startswith("arm,step,loss")
    assert main(["report", str(run)]) == 0
    assert "re-verified offline" in capsys.readouterr().out


def test_eval_on_the_fixtures(trained, tmp_path, capsys):
    _, run = trained
    out = tmp_path / "eval.json"
    code = main(["eval", str(run / "lyactl.pt"), "--tasks", "bpb,mmlu0", "--data-dir", str(FIXTURES),
                 "--device", "cpu", "--limit", "2", "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["config"]["tokenizer"] == "tokenizer.json"  # the run's own tokenizer was picked up
    assert result["tasks"]["mmlu0"]["metrics"]["acc"]["n"] == 4  # 2 subjects x --limit 2
    assert result["tasks"]["bpb"]["metrics"]["bpb"]["value"] > 0
    assert main(["eval", str(run / "lyactl.pt"), "--tasks", "nope", "--data-dir", str(FIXTURES)]) == 2


def test_cli_runs_as_a_module_without_torch_for_report(tmp_path):
    code = "import sys, lyactl.app.cli; sys.exit(0 if 'torch' not in sys.modules else 3)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_metrics_without_tensorboard_still_write_the_plain_record(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from lyactl_torch.runlog import MetricsLog, tensorboard_writer, write_csv

    monkeypatch.setitem(sys.modules, "tensorboard", None)
    assert tensorboard_writer(tmp_path / "tb") is None
    log = MetricsLog(tmp_path / "m.jsonl", tmp_path / "tb")
    rows = [{"arm": "a", "step": s, "loss": 1.0 / s, "extra": float("nan")} for s in (1, 2)]
    for r in rows:
        log.log(r)
    log.close()
    back = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in back] == [1.0, 0.5] and back[0]["extra"] is None  # NaN -> null
    write_csv(back, tmp_path / "m.csv")
    assert (tmp_path / "m.csv").read_text().splitlines() == ["arm,step,loss,extra", "a,1,1.0,", "a,2,0.5,"]
    assert not (tmp_path / "tb").exists()
