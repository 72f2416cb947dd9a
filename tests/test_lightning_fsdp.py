"""Lightning's ModelParallelStrategy (FSDP2: ``fully_shard`` in ``configure_model``) with
LyactlLightningCallback: 2 CPU processes (gloo) under torch.distributed.run
(``tests/lightning_fsdp_run.py``) pick the FSDPBackend, see bitwise identical statistics,
take identical decisions from them, cut and freeze the sharded model alike and train on;
the strategies the callback cannot drive are refused by name before any step."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from launch import torchrun

torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch")
dist = pytest.importorskip("torch.distributed")
pytest.importorskip("torch.distributed.fsdp")

from lyactl.errors import InvalidArgumentError  # noqa: E402

HERE = Path(__file__).resolve().parent


def test_two_ranks_under_model_parallel_strategy_decide_and_cut_alike(tmp_path):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    proc = torchrun(HERE / "lightning_fsdp_run.py", str(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["world"] == 2 and r0["steps"] == r1["steps"] == 8
    assert r0["backend"] == r1["backend"] == "FSDPBackend" and r0["sharded"] and r1["sharded"]
    assert r0["events"] == r1["events"] and {a for e in r0["events"] for _, a in e} == {"prune", "freeze"}
    assert len(r0["stats"]) == 4
    for a, b in zip(r0["stats"], r1["stats"], strict=True):
        np.testing.assert_array_equal(a, b)  # synchronised: bitwise identical (NaN for pruned groups alike)
    assert r0["loss"] == r1["loss"] and np.all(np.isfinite(r0["loss"]))
    for r in (r0, r1):  # each rank's model shrank by the pruned head and MLP group, after each event
        final = r["shapes"][-1]
        assert len(r["shapes"]) == 2 and final != r["start"]
        assert sum(final[f"blocks.{b}.attn.q.weight"][0] for b in (0, 1)) == 2 * 64 - 16
        assert sum(final[f"blocks.{b}.mlp.fc.weight"][0] for b in (0, 1)) == 2 * 192 - 16
        assert r["frozen"] and {n.split(".")[1] for n in r["frozen"]} == {"0"}
    assert r0["shapes"] == r1["shapes"]
    for n, p in r0["params"].items():  # training after the events kept the ranks' gathered weights equal
        assert torch.equal(p, r1["params"][n]), n


def _fit_start(strategy, world_size=2, model=None):
    from lyactl_torch import integrations as I

    cb = I.LyactlLightningCallback(lambda backend: None)  # the factory is never called
    trainer = SimpleNamespace(world_size=world_size, global_step=0, strategy=strategy)
    cb.on_fit_start(trainer, model if model is not None else _gpt())
    return cb


def _gpt():
    import lyactl_torch as L

    return L.GPT(L.GPTConfig(vocab_size=11, seq_len=4, d_model=16, n_layer=1, n_head=2, head_dim=8))


class DeepSpeedStrategy:  # deepspeed is not installed here: a stand-in with the real class name
    model = None


@pytest.mark.parametrize("make", [lambda: pl.strategies.FSDPStrategy(), DeepSpeedStrategy])
def test_other_sharded_strategies_are_refused_by_name(make):
    strategy = make()
    with pytest.raises(InvalidArgumentError, match=f"trainer.strategy.*{type(strategy).__name__}"):
        _fit_start(strategy)


class _Mesh:
    def __init__(self, tp):
        self.tp = tp

    def __getitem__(self, name):
        return SimpleNamespace(size=lambda: self.tp if name == "tensor_parallel" else 2)


@pytest.mark.parametrize("tp, match", [(1, "fully_shard"), (2, "tensor_parallel_size")])
def test_model_parallel_without_plain_fsdp2_is_refused(tp, match):
    """Tensor parallelism, or a configure_model that did not apply fully_shard at the
    adapted model's root: refused at on_fit_start, naming what is missing."""
    strategy = pl.strategies.ModelParallelStrategy(data_parallel_size=2 // tp, tensor_parallel_size=tp)
    strategy._device_mesh = _Mesh(tp)
    with pytest.raises(InvalidArgumentError, match=match):
        _fit_start(strategy, world_size=1)
