"""Restore (the guard's rollback) under FSDP2: 2 CPU ranks with gloo under
torch.distributed.run (``tests/fsdp_restore_run.py``) apply one event (heads, MLP groups
and a residual-channel group pruned, block 0 frozen, block 2 removed) and restore it at
the next report, then train on.

Checked against a single-process :class:`TorchBackend` run of the same apply and restore
on the same global batches: gathered parameters, AdamW state, per-step losses and the
statistics of every report (before and after the restore). These agree to float
tolerance, not bitwise: FSDP2 averages two half-batch gradients by a reduce-scatter where
the single process backpropagates the whole batch, so float32 sums associate differently
(measured: 2e-5 of a tensor's largest magnitude at worst, losses 2e-7 apart). Bitwise:
the two ranks' gathered state and losses, and an apply-then-restore round trip within
the sharded run. Three broken restores (on one rank only, without the rebuild, without
the optimizer moments) must fail."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from fsdp_compare import close, load, trace_problems
from launch import torchrun

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
pytest.importorskip("torch.distributed.fsdp")

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "fsdp_restore_run.py"


def _run(out: Path, *flags: str, ranks: int = 2) -> subprocess.CompletedProcess:
    return torchrun(RUNNER, str(out), *flags, ranks=ranks)


def problems(run: dict, ref: dict) -> list[str]:
    """What is wrong with a sharded rank's result, against the single-process ``ref``."""
    start, applied, restored = run["shapes"]
    found = [] if applied != start else ["the event changed no shape"]
    if restored != start or run["shapes"] != ref["shapes"]:
        return found + ["shapes after the restore differ from the original"]
    for n, p in ref["params"].items():
        found += [] if close(run["params"][n], p) else [f"parameter {n}"]
    for n, stt in ref["optim"].items():
        found += [f"optimizer {k} of {n}" for k, v in stt.items() if not close(run["optim"][n][k], v)]
    found += [] if set(run["optim"]) == set(ref["optim"]) else ["optimizer state of other parameters"]
    found += trace_problems(run, ref)
    found += [] if run["round_trip_changed"] == [] else [f"round trip changed {run['round_trip_changed'][:3]}"]
    found += [] if run["sharded"] and run["n_units"] == 4 else ["not every block sharded again"]
    return found + ([] if run["held"] == [] and run["kinds"] == ["apply", "restore"] * 2 else ["records"])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    out = tmp_path_factory.mktemp("fsdp_restore")
    proc = _run(out / "single", "--single", ranks=1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = _run(out / "sharded")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return load(out / "single", 0), (load(out / "sharded", 0), load(out / "sharded", 1))


def test_restore_equals_the_single_process_restore_on_both_ranks(runs):
    ref, (r0, r1) = runs
    assert ref["shapes"][0] == ref["shapes"][2] != ref["shapes"][1]  # the reference itself cut and came back
    assert problems(r0, ref) == [] and problems(r1, ref) == []
    assert r0["losses"] == r1["losses"]  # all-reduced: bitwise alike on both ranks
    for n, p in r0["params"].items():
        assert torch.equal(p, r1["params"][n]), n
        for k, v in r0["optim"].get(n, {}).items():
            assert torch.equal(v, r1["optim"][n][k]), (n, k)


def test_the_event_did_what_it_names(runs):
    """The apply really removed heads, MLP units, residual channels and block 2 and froze
    block 0 (so the restore had all of them to undo)."""
    _, (r0, _) = runs
    start, applied, _ = r0["shapes"]
    assert applied["blocks.0.attn.q.weight"][0] == start["blocks.0.attn.q.weight"][0] - 16  # one head of 16
    assert applied["blocks.1.mlp.fc.weight"][0] == start["blocks.1.mlp.fc.weight"][0] - 16  # one MLP group
    assert applied["wte.weight"][1] == start["wte.weight"][1] - 16  # one channel group, tied embedding
    assert not any(n.startswith("blocks.2.") for n in applied) and any(n.startswith("blocks.2.") for n in start)
    assert [{n.split(".")[1] for n in names} for names in r0["frozen"]] == [set(), {"0"}, set()]  # block 0 only


@pytest.mark.parametrize("mutant", ["one-rank", "skip-rebuild", "zero-moments"])
def test_broken_restores_are_detected(runs, tmp_path, mutant):
    ref, _ = runs
    proc = _run(tmp_path / "m", "--mutant", mutant, "--timeout", "10")
    if mutant == "one-rank":  # the ranks' collectives no longer match: the run must not finish cleanly
        assert proc.returncode != 0 or any(problems(load(tmp_path / "m", r),
                                                    ref) for r in (0, 1))
        return
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]  # silent bugs: only the check sees them
    assert problems(load(tmp_path / "m", 0), ref) != []
