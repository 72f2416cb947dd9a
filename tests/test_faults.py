"""Fault injection: atomic writes, disk full, corrupt / truncated checkpoints, kill -9.

The in-process tests exercise lyactl.app.atomic and lyactl_torch.run_state directly; the last
test runs the whole subprocess suite of benchmarks/studies/fault_injection.py (SIGKILL before,
during and after an event and inside checkpoint writes, ENOSPC, flipped bytes, truncated
payloads, garbled manifests; each resumed and compared bit for bit with the
uninterrupted run) and prints its figures.
"""

import errno
import json

import pytest

import lyactl.app.atomic as atomic
from lyactl.errors import CheckpointError


# ---------------------------------------------------------------- lyactl.app.atomic (no torch)
def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "f.json"
    atomic.atomic_write_json(path, {"a": 1})
    atomic.atomic_write_json(path, {"a": 2, "b": [1, 2]})
    assert atomic.read_json(path) == {"a": 2, "b": [1, 2]}
    assert atomic.sha256_file(path) == atomic.sha256_hex(path.read_bytes())
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch, code):
    path = tmp_path / "f.bin"
    atomic.atomic_write(path, b"old content")

    def fail(fd):
        raise OSError(code, "injected")

    monkeypatch.setattr(atomic, "_fsync", fail)
    with pytest.raises(OSError) as info:
        atomic.atomic_write(path, b"new content that never lands")
    assert info.value.errno == code
    assert path.read_bytes() == b"old content" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_stale_temps_are_removed_and_json_errors_name_the_file(tmp_path):
    (tmp_path / ".run-00000004.json.abcd.tmp").write_bytes(b"half")
    assert [p.name for p in atomic.remove_stale_temps(tmp_path)] == [".run-00000004.json.abcd.tmp"]
    (tmp_path / "m.json").write_text('{"step": ')
    with pytest.raises(CheckpointError, match="m.json"):
        atomic.read_json(tmp_path / "m.json")
    with pytest.raises(TypeError, match="data"):
        atomic.atomic_write(tmp_path / "x", "text, not bytes")


# ---------------------------------------------------------------- run checkpoints
@pytest.fixture
def small_run():
    torch = pytest.importorskip("torch")
    import lyactl_torch as L

    torch.manual_seed(0)
    model = L.GPT(L.GPTConfig(vocab_size=17, seq_len=8, d_model=64, n_layer=1, n_head=2, head_dim=32))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, 17, (2, 8))
    model(x, x)[1].backward()
    opt.step()
    return model, opt


def test_disk_full_keeps_previous_checkpoint(tmp_path, monkeypatch, small_run):
    from lyactl_torch import run_state

    model, opt = small_run
    run_state.save_run(tmp_path, step=4, model=model, optimizer=opt)
    real = atomic._fsync

    def enospc(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "_fsync", enospc)
    with pytest.raises(CheckpointError, match="run-00000008.*No space left") as info:
        run_state.save_run(tmp_path, step=8, model=model, optimizer=opt)
    assert info.value.errno == errno.ENOSPC and "previous checkpoints are intact" in str(info.value)
    monkeypatch.setattr(atomic, "_fsync", real)
    assert run_state.load_run(tmp_path).step == 4
    assert not list(tmp_path.glob(".*.tmp")) and not list(tmp_path.glob("run-00000008*"))


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "manifest", "missing"])
def test_damaged_newest_checkpoint_falls_back(tmp_path, small_run, damage):
    from lyactl_torch import run_state

    model, opt = small_run
    for step in (2, 4, 6):
        run_state.save_run(tmp_path, step=step, model=model, optimizer=opt, extra={"at": step})
    assert [s for s, _ in run_state.list_checkpoints(tmp_path)] == [6, 4]  # keep the newest 2
    manifest = tmp_path / "run-00000006.json"
    payload = tmp_path / json.loads(manifest.read_text())["payload"]
    data = payload.read_bytes()
    if damage == "flip":
        payload.write_bytes(data[:100] + bytes(b ^ 0x55 for b in data[100:108]) + data[108:])
    elif damage == "truncate":
        payload.write_bytes(data[: len(data) - 7])
    elif damage == "empty":
        payload.write_bytes(b"")
    elif damage == "manifest":
        manifest.write_text("{not json")
    else:
        payload.unlink()
    with pytest.warns(RuntimeWarning, match="run-00000006"):
        state = run_state.load_run(tmp_path)
    assert state.step == 4 and state.payload["extra"] == {"at": 4}
    assert len(state.skipped) == 1 and "run-00000006" in state.skipped[0]
    run_state.quarantine_newer(tmp_path, state.step)
    assert [s for s, _ in run_state.list_checkpoints(tmp_path)] == [4]


def test_no_good_checkpoint_is_a_clear_error(tmp_path, small_run):
    from lyactl_torch import run_state

    model, opt = small_run
    for step in (2, 4):
        run_state.save_run(tmp_path, step=step, model=model, optimizer=opt)
    for p in tmp_path.glob("run-*.pt"):
        p.write_bytes(p.read_bytes()[:50])
    with pytest.warns(RuntimeWarning), pytest.raises(CheckpointError, match="no checkpoint could be recovered") as info:
        run_state.load_run(tmp_path)
    assert "run-00000002" in str(info.value) and "run-00000004" in str(info.value)
    assert run_state.load_run(tmp_path / "empty") is None


# ---------------------------------------------------------------- kill -9 and friends
def test_fault_injection_suite_loses_no_data():
    pytest.importorskip("torch")
    from benchmarks.studies.fault_injection import run_suite

    figures = run_suite()
    rows = figures["scenarios"]
    print(f"\nfaults injected: {figures['faults_injected']}, runs recovered: {figures['runs_recovered']}, "
          f"data lost: {figures['data_lost']} ({figures['seconds']} s)")
    assert figures["reference_events"] >= 1  # the reference run does have an event to survive
    assert figures["faults_injected"] == len(rows) >= 12
    assert {r["killed_at"] for r in rows} >= {"event", "write payload", "write manifest", "write dir", "ENOSPC"}
    assert [r["scenario"] for r in rows if not (r["recovered"] and r["identical"])] == []
    assert figures["data_lost"] == 0 and figures["runs_recovered"] == figures["faults_injected"]
