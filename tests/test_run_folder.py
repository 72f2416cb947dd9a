"""Run folders are history (issue 17): nothing is touched before the input is validated, a
new run never lands in a folder holding files unless asked, and ``lyactl report`` fails,
naming the file, on a missing, emptied, truncated or altered file and on events without
decisions (``lyactl.app.runfolder``)."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from lyactl.app import exit_codes
from lyactl.app.cli import main
from lyactl.app.runfolder import MANIFEST, audit, claim, default_out, write_manifest
from lyactl.errors import DataFileError, InvalidArgumentError


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One tiny demo run (both arms, certified events), sealed by its manifest."""
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    pytest.importorskip("tokenizers")
    out = tmp_path_factory.mktemp("rf") / "run"
    assert main(["demo", "--preset", "tiny", "--out", str(out), "--no-progress", "--threads", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert any(a.get("events") for a in summary["arms"]), "the tiny demo made no event to test with"
    return out


@pytest.fixture
def run_copy(demo_run, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(demo_run, dst)
    return dst


def test_an_intact_run_reports_ok_and_its_manifest_lists_every_record(demo_run, capsys):
    manifest = json.loads((demo_run / MANIFEST).read_text())
    for name in ("decisions.jsonl", "metrics.jsonl", "summary.json", "traces.json", "config.json", "run.log"):
        entry = manifest["files"][name]
        assert entry["bytes"] == (demo_run / name).stat().st_size
        assert entry["sha256"] == hashlib.sha256((demo_run / name).read_bytes()).hexdigest()
    assert audit(demo_run) == ()
    assert main(["report", str(demo_run)]) == exit_codes.OK
    assert main(["report", str(demo_run)]) == exit_codes.OK  # redrawing the plots keeps the run intact
    assert "re-verified offline" in capsys.readouterr().out


def _delete(p: Path) -> None:
    p.unlink()


def _empty(p: Path) -> None:
    p.write_bytes(b"")


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _alter(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, same size
    p.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_delete, _empty, _truncate, _alter], ids=lambda f: f.__name__[1:])
@pytest.mark.parametrize("name", ["decisions.jsonl", "metrics.jsonl", "summary.json", "traces.json"])
def test_report_fails_naming_a_damaged_file(run_copy, name, damage, capsys):
    damage(run_copy / name)
    code = main(["report", str(run_copy)])
    out = capsys.readouterr()
    if name == "summary.json" and damage is _delete:
        assert code == exit_codes.BAD_INPUT  # no longer a run folder at all
        assert "summary.json" in out.err
        return
    assert code == exit_codes.FAILS
    assert f"FAIL {run_copy / name}" in out.out
    assert "all verify" not in out.out.splitlines()[-1]


def test_report_fails_without_a_manifest(run_copy, capsys):
    (run_copy / MANIFEST).unlink()
    assert main(["report", str(run_copy)]) == exit_codes.FAILS
    assert f"FAIL {run_copy / MANIFEST}" in capsys.readouterr().out


def test_events_without_decisions_fail_even_with_a_resealed_manifest(run_copy, capsys):
    (run_copy / "decisions.jsonl").write_text("")  # the log emptied and the manifest rewritten to match
    write_manifest(run_copy)
    problems = audit(run_copy)
    assert [p.file for p in problems] == ["decisions.jsonl"] and "events" in problems[0].problem
    assert main(["report", str(run_copy)]) == exit_codes.FAILS
    assert "decisions.jsonl" in capsys.readouterr().out


def test_a_bad_config_into_an_existing_run_changes_nothing(run_copy, tmp_path, capsys):
    before = _hashes(run_copy)
    cfg = tmp_path / "bad.toml"
    cfg.write_text(f'[data]\ncorpus = "{(tmp_path / "no-such-corpus").as_posix()}"\n[training]\nsteps = 5\nwarmup = 1\n')
    assert main(["train", str(cfg), "--out", str(run_copy), "--no-progress"]) == exit_codes.BAD_INPUT
    assert "no-such-corpus" in capsys.readouterr().err
    assert _hashes(run_copy) == before  # nothing deleted or truncated before the input was validated


def test_a_new_run_into_an_existing_folder_is_refused_naming_it_and_the_flags(run_copy, tmp_path, capsys):
    before = _hashes(run_copy)
    cfg = tmp_path / "ok.toml"
    cfg.write_text("[training]\nsteps = 5\nwarmup = 1\n")
    assert main(["train", str(cfg), "--out", str(run_copy), "--no-progress"]) == exit_codes.BAD_INPUT
    err = capsys.readouterr().err
    assert str(run_copy) in err and "--new-run" in err and "--overwrite" in err
    assert _hashes(run_copy) == before


def test_claim_new_run_overwrite_and_default(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text("{}")
    (run / "decisions.jsonl").write_text("x\n")
    (run / "notes.txt").write_text("mine")
    with pytest.raises(InvalidArgumentError, match="--new-run"):
        claim(run)
    assert claim(run, new_run=True) == tmp_path / "run-2"  # beside it, the old one untouched
    assert (run / "decisions.jsonl").read_text() == "x\n"
    with pytest.raises(InvalidArgumentError, match="at most one"):
        claim(run, new_run=True, overwrite=True)
    assert claim(run, overwrite=True) == run
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]  # the run's files gone, the user's kept
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep")
    with pytest.raises(InvalidArgumentError, match="--out"):
        claim(foreign, overwrite=True)
    assert (foreign / "thesis.tex").read_text() == "keep"
    monkeypatch.chdir(tmp_path)
    first = claim(default_out("demo"))
    (first / "x").write_text("1")
    second = claim(default_out("demo"))
    assert first != second and first.parent == second.parent
    assert (first.parent / ".gitignore").read_text().splitlines()[-1] == "*"  # runs stay out of git status


def test_audit_of_something_that_is_not_a_run_folder(tmp_path):
    with pytest.raises(DataFileError, match="RUN_DIR"):
        audit(tmp_path)
