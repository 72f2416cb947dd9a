"""FSDP2 (fully_shard per block and at the root), 2 CPU ranks with gloo under
torch.distributed.run (``tests/fsdp_run.py``): decisions taken from the synchronised
statistics are identical on both ranks; after the events (a head and an MLP group cut, a
residual-channel cut through every unit and the tied embedding, a block frozen and one
removed) the gathered parameters and optimizer state equal a single-process run of the
same decisions on the same global batches; mutants that skip
the re-sharding or slice on one rank only are detected."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from launch import torchrun
from hypothesis import given, strategies as st

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
pytest.importorskip("torch.distributed.fsdp")

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "fsdp_run.py"
ADDITIVE = ("w_sq", "dw_sq", "g_sq", "gw", "m_sq")


def _torchrun(out: Path, *flags: str) -> subprocess.CompletedProcess:
    return torchrun(RUNNER, str(out), *flags)


def _load(out: Path) -> tuple[dict, dict]:
    return tuple(torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1))


def problems(run: dict, ref: dict, exact: bool) -> list[str]:
    """What differs between two runs' final parameters and optimizer state (empty: none)."""
    found = []
    if run["shapes"] != ref["shapes"]:
        return [f"shapes {run['shapes']} != {ref['shapes']}"]
    close = (lambda a, b: torch.equal(a, b)) if exact else (
        lambda a, b: torch.allclose(a.double(), b.double(), rtol=1e-4, atol=1e-5))
    for n, p in ref["params"].items():
        if not close(run["params"][n], p):
            found.append(f"parameter {n}")
    if set(run["optim"]) != set(ref["optim"]):
        found.append("optimizer state of other parameters")
    for n, stt in ref["optim"].items():
        for k, v in stt.items():
            if n in run["optim"] and not close(run["optim"][n][k], v):
                found.append(f"optimizer {k} of {n}")
    return found


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    out = tmp_path_factory.mktemp("fsdp")
    proc = _torchrun(out, "--ckpt", str(out / "ckpt"), "--save-at", "4")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, _load(out)


def test_decisions_and_statistics_identical_on_both_ranks(sharded):
    _, (r0, r1) = sharded
    assert r0["sharded"] and r1["sharded"]  # every parameter is still a DTensor after the events
    assert len(r0["events"]) == 3 and r0["events"] == r1["events"]
    assert {d["action"] for e in r0["events"] for d in e["decisions"]} == {"prune", "freeze"}
    for a, b in zip(r0["stats"], r1["stats"], strict=True):
        for f in ADDITIVE:
            np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
        assert a.loss == b.loss
    assert r0["shapes"]["wte.weight"] == (29, 48) and len([n for n in r0["shapes"] if n.endswith("mlp.fc.weight")]) == 2
    for n, p in r0["params"].items():
        assert torch.equal(p, r1["params"][n]), n


def test_gathered_state_equals_a_single_process_run_of_the_same_decisions(sharded, tmp_path):
    out, (r0, _) = sharded
    events = tmp_path / "events.json"
    events.write_text(json.dumps(r0["events"]))
    proc = torchrun(RUNNER, tmp_path / "single", "--single", events, ranks=1, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ref = torch.load(tmp_path / "single" / "rank0.pt", weights_only=False)
    assert ref["events"] == r0["events"]
    assert problems(r0, ref, exact=False) == []
    for a, b in zip(r0["stats"], ref["stats"], strict=True):  # shard sums + all-reduce == one-process sums
        for f in ADDITIVE:
            np.testing.assert_allclose(getattr(a, f), getattr(b, f), rtol=1e-4, atol=1e-9)
        assert a.loss == pytest.approx(b.loss, rel=1e-6)


def test_resume_after_a_kill_mid_save_equals_the_uninterrupted_run(sharded, tmp_path):
    """The run saved a checkpoint at step 4 and went on; a kill while writing the next one
    leaves a partial ``.tmp-*`` directory (made here from step 4's files, truncated): the
    resume must ignore it, load step 4, replay the structure and end bitwise equal."""
    out, (r0, _) = sharded
    ckpt = tmp_path / "ckpt"
    shutil.copytree(out / "ckpt", ckpt)
    partial = ckpt / ".tmp-step-00000006"
    shutil.copytree(ckpt / "step-00000004", partial)
    for f in partial.iterdir():
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    proc = _torchrun(tmp_path / "resumed", "--ckpt", str(ckpt), "--resume")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    d0, d1 = _load(tmp_path / "resumed")
    assert d0["start"] == 4 and d0["step"] == 8 and d0["events"] == r0["events"] == d1["events"]
    assert problems(d0, r0, exact=True) == [] and problems(d1, r0, exact=True) == []
    for a, b in zip(r0["stats"][2:], d0["stats"], strict=True):  # the reports after the resume
        for f in ADDITIVE:
            np.testing.assert_array_equal(getattr(a, f), getattr(b, f))


@pytest.mark.parametrize("mutant", ["skip-reshard", "one-rank"])
def test_surgery_mutants_are_detected(sharded, tmp_path, mutant):
    _, (r0, _) = sharded
    proc = _torchrun(tmp_path / "m", "--mutant", mutant)
    if proc.returncode == 0:  # the run finished: its result must then differ
        m0, m1 = _load(tmp_path / "m")
        assert not (m0["sharded"] and m1["sharded"]) or problems(m0, r0, exact=False) or problems(m1, r0, exact=False)


@given(n=st.integers(0, 300), world=st.integers(1, 9))
def test_shard_rows_is_torch_chunk(n, world):
    from lyactl_torch.fsdp_units import shard_rows

    x = torch.arange(n)
    got = [x[s:s + k] for s, k in (shard_rows(n, world, r) for r in range(world))]
    want = list(torch.chunk(x, world)) if n else []
    want += [x[:0]] * (world - len(want))
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    assert sum(len(g) for g in got) == n


def test_event_digest_separates_events():
    from lyactl.control.groups import Action, Decision, Event
    from lyactl_torch.fsdp import event_digest

    e = Event(0, 2, (Decision(2, "a", 1, Action.PRUNE),))
    assert event_digest(e) == event_digest(Event(0, 2, (Decision(2, "a", 1, Action.PRUNE),)))
    assert event_digest(e) != event_digest(Event(0, 2, (Decision(2, "a", 2, Action.PRUNE),)))
    assert event_digest(e) != event_digest(Event(0, 2, (Decision(2, "a", 1, Action.FREEZE),)))


def test_backend_needs_a_process_group():
    import lyactl_torch as L
    from lyactl.errors import InvalidArgumentError
    from lyactl_torch.fsdp import FSDPBackend

    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    model = L.GPT(L.GPTConfig(vocab_size=11, seq_len=4, d_model=16, n_layer=1, n_head=2, head_dim=8))
    with pytest.raises(InvalidArgumentError, match="torch.distributed"):
        FSDPBackend(model, torch.optim.SGD(model.parameters(), lr=0.1))


def test_scale_benchmark_tiny_preset_runs_sharded(tmp_path):
    """``benchmarks.scale.run --preset tiny`` under torchrun (2 CPU ranks, FSDP2 from a
    meta-device model), one event with lyactl's controller in the shadow: the issue's JSON
    fields and a FLOP cut that matches the pruned MLP share (25 % of 8 groups of 32 neurons
    per block). One event: with two, about 1 run in 15 aborted at interpreter exit after all
    work was done (gloo, "terminate called without an active exception"; docs/fsdp.md,
    Limits); the two-event records are checked in one process below."""
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    out = tmp_path / "scale.json"
    proc = torchrun("-m", "benchmarks.scale.run", "--preset", "tiny", "--out", out, "--steps", "12", cwd=HERE.parent)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rec = json.loads(out.read_text())
    for key in ("gpu", "n_params", "mfu_dense", "overhead_frac", "realised_share", "compile_stall_s_per_event", "n_gpus"):
        assert key in rec
    assert rec["world"] == 2 and rec["events"] == 1 and rec["gpu"] is None and rec["mfu_dense"] is None
    assert rec["shadow"] and rec["steps"] == 12
    F0 = rec["flops_per_token_before"]
    assert F0 - rec["flops_per_token_after"] == 2 * _mlp_group_flops()
    assert rec["overhead_frac"] > 0 and rec["step_time_s_before"] > 0  # a ratio of timings: no bound on a loaded CPU


def _mlp_group_flops() -> int:
    """Training FLOPs/token of one 32-neuron MLP group in every block of the tiny preset."""
    from benchmarks.scale.run import PRESETS

    m = PRESETS["tiny"]["model"]
    return 6 * 2 * m["n_layer"] * m["d_model"] * (m["mlp_hidden"] // 8)


def test_scale_benchmark_records_every_event(tmp_path):
    """Two events in one process: 25 % of 8 groups per block (2), then 25 % of the 6 left (1);
    each event's FLOPs, and the top-level fields are the first event's."""
    from benchmarks.scale.run import main

    out = tmp_path / "scale.json"
    assert main(["--preset", "tiny", "--out", str(out), "--steps", "12", "--event-report", "1", "2"]) == 0
    rec = json.loads(out.read_text())
    F0 = rec["flops_per_token_before"]
    assert rec["events"] == 2 and rec["world"] == 1
    assert [F0 - e["flops_per_token_after"] for e in rec["per_event"]] == [2 * _mlp_group_flops(), 3 * _mlp_group_flops()]
    assert rec["flops_per_token_after"] == rec["per_event"][0]["flops_per_token_after"]
    assert [e["step"] for e in rec["per_event"]] == [4, 8]
