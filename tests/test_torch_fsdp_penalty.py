"""The proximal group-lasso penalty under FSDP2 (:mod:`lyactl_torch.fsdp_penalty`): 2 CPU
ranks with gloo under torch.distributed.run (``tests/fsdp_penalty_run.py``).

Scripted strengths on two heads, two MLP groups, a residual-channel group and a LAYER group
(overlapping kinds, one NaN strength), a pruning of the head the penalty zeroed, training
on: the gathered parameters, every step's loss and every report's statistics equal those
of a single-process :class:`TorchBackend` run with the same strengths on the same global
batches, to ``RTOL`` of each tensor's largest magnitude (float32 re-association only, as
in ``tests/test_torch_fsdp_restore.py``: FSDP2 averages half-batch gradients by a
reduce-scatter and the norms are shard sums plus an all-reduce; measured 2e-5 at worst).
Bitwise: the two ranks' parameters, losses and strengths. The real controller in budget
mode drives the penalty under FSDP2 to pruning events that are identical on both ranks.
A prox that uses each rank's shard norms without the all-reduce must fail the equality,
and strengths that differ by rank are refused on every rank."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from fsdp_compare import ADDITIVE, close, load, trace_problems
from launch import torchrun

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
pytest.importorskip("torch.distributed.fsdp")

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "fsdp_penalty_run.py"


def _run(out: Path, *flags: str, ranks: int = 2) -> subprocess.CompletedProcess:
    return torchrun(RUNNER, str(out), *flags, ranks=ranks)


def problems(run: dict, ref: dict) -> list[str]:
    """What differs between a sharded rank's scripted run and the single-process ``ref``."""
    if run["shapes"] != ref["shapes"]:
        return ["shapes"]
    found = [f"parameter {n}" for n, p in ref["params"].items() if not close(run["params"][n], p)]
    found += trace_problems(run, ref)
    found += [] if run["events"] == ref["events"] else ["events"]
    return found + ([] if all(np.array_equal(a, b) for a, b in zip(run["lams"], ref["lams"], strict=True))
                    else ["strengths"])


def _bitwise_alike(a: dict, b: dict) -> bool:
    """The two ranks' gathered parameters, losses and strengths, bitwise."""
    return (a["params"].keys() == b["params"].keys() and all(torch.equal(p, b["params"][n]) for n, p in a["params"].items())
            and a["losses"] == b["losses"] and len(a["lams"]) == len(b["lams"])
            and all(np.array_equal(x, y) for x, y in zip(a["lams"], b["lams"])))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    out = tmp_path_factory.mktemp("fsdp_penalty")
    proc = _run(out / "single", "--single", ranks=1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = _run(out / "sharded", "--budget")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return load(out / "single", 0), (load(out / "sharded", 0), load(out / "sharded", 1))


def test_sharded_penalty_equals_the_single_process_penalty_on_both_ranks(runs):
    ref, (r0, r1) = runs
    a, b = r0["scripted"], r1["scripted"]
    assert a["sharded"] and b["sharded"]
    assert problems(a, ref["scripted"]) == [] and problems(b, ref["scripted"]) == []
    assert _bitwise_alike(a, b)


def test_the_penalty_acted_as_scripted(runs):
    """The strongest strength drove its head to exact zero (Adam alone never does) before
    it was pruned; the NaN strength and the unpenalised groups got 0; the event cut the head."""
    from fsdp_penalty_run import LAM, NAN, ZEROED

    _, (r0, _) = runs
    a = r0["scripted"]
    i = a["names"].index(ZEROED)
    assert a["stats"][0].w_sq[i] > 0 and a["stats"][1].w_sq[i] == 0.0 and np.isnan(a["stats"][-1].w_sq[i])
    lam = dict(zip(a["names"], a["lams"][0]))
    assert lam[NAN] == 0.0 and {n for n, v in lam.items() if v > 0} == set(LAM)
    assert a["shapes"]["blocks.0.attn.q.weight"][0] == a["shapes"]["blocks.1.attn.q.weight"][0] - 16  # one head


def test_budget_mode_prunes_under_fsdp_with_identical_decisions_on_both_ranks(runs):
    _, (r0, r1) = runs
    a, b = r0["budget"], r1["budget"]
    assert a["sharded"] and b["sharded"]
    assert any(np.any(lam > 0) for lam in a["lams"])  # the PI controller did set a penalty
    prunes = [d for e in a["events"] for d in e["decisions"] if d["action"] == "prune"]
    assert prunes and a["events"] == b["events"]
    assert _bitwise_alike(a, b)
    for st_a, st_b in zip(a["stats"], b["stats"], strict=True):
        for f in ADDITIVE:
            np.testing.assert_array_equal(getattr(st_a, f), getattr(st_b, f))


def test_strengths_that_differ_by_rank_are_refused_on_every_rank(runs):
    _, (r0, r1) = runs
    for r in (r0, r1):
        assert r["disagree"]["kept"] and "penalty strength across ranks" in (r["disagree"]["message"] or "")


def test_a_prox_on_unreduced_shard_norms_is_detected(runs, tmp_path):
    ref, _ = runs
    proc = _run(tmp_path / "m", "--mutant", "local-norms")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]  # a silent bug: only the check sees it
    assert problems(load(tmp_path / "m", 0)["scripted"], ref["scripted"]) != []


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_group_with_a_non_finite_norm_is_left_unchanged(bad):
    """The factors both backends share: a penalised group holding a NaN or infinite weight
    is not touched (no action on non-finite input), a finite one beside it is shrunk."""
    import lyactl_torch as L

    torch.manual_seed(0)
    model = L.GPT(L.GPTConfig(vocab_size=11, seq_len=4, d_model=32, n_layer=1, n_head=2, head_dim=16, mlp_hidden=64))
    b = L.TorchBackend(model, torch.optim.SGD(model.parameters(), lr=0.1), block=16)
    names = [g.name for g in b.groups()]
    lam = np.zeros(len(names))
    lam[[names.index("blocks.0.mlp.block.0"), names.index("blocks.0.mlp.block.1")]] = 1e-2
    b.set_penalty(lam)
    fc = model.blocks[0].mlp.fc.weight
    with torch.no_grad():
        fc[0, 0] = bad
    before = fc.detach().clone()
    b.apply_penalty()
    assert torch.equal(fc[:16].nan_to_num(), before[:16].nan_to_num())  # block 0: rows 0..15
    assert torch.all(fc[16:32].abs() < before[16:32].abs())  # block 1 shrank (SGD's lr 0.1 * 1e-2 per step)
