"""Lightning's DDP strategy with LyactlLightningCallback, 2 CPU processes (gloo) launched by
torch.distributed.run: both ranks see identical (synchronised) statistics, take identical
decisions, rebuild the strategy's DDP wrapper after each event, and stay bitwise in sync
while training continues on the pruned and partly frozen model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from launch import torchrun

torch = pytest.importorskip("torch")
pytest.importorskip("lightning.pytorch")
dist = pytest.importorskip("torch.distributed")

HERE = Path(__file__).resolve().parent


def test_two_ranks_decide_alike_and_train_on_in_sync(tmp_path):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    proc = torchrun(HERE / "lightning_ddp_run.py", str(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["world"] == 2 and r0["steps"] == r1["steps"] == 8
    assert r0["events"] == r1["events"] and {a for e in r0["events"] for _, a in e} == {"prune", "freeze"}
    for a, b in zip(r0["stats"], r1["stats"], strict=True):
        np.testing.assert_array_equal(a, b)  # synchronised: bitwise identical
    assert r0["loss"] == r1["loss"]  # each rank's own batches: equal only once averaged over the ranks
    assert r0["rebuilt"] == r1["rebuilt"] == [True, True] and r0["in_use"] and all(r0["in_use"])
    assert r0["find_unused"] == [False, True]  # after block 0 froze nothing below it gets a gradient
    assert r0["shapes"] == r1["shapes"] and r0["shapes"]["blocks.0.mlp.fc.weight"][0] + \
        r0["shapes"]["blocks.1.mlp.fc.weight"][0] == 2 * 192 - 64
    for n, p in r0["params"].items():  # steps after the events kept the replicas equal
        assert torch.equal(p, r1["params"][n]), n


@pytest.mark.parametrize("trainer_kind", ["hf", "lightning-fsdp"])
def test_multi_process_training_it_cannot_rebuild_is_refused(trainer_kind):
    """The HF Trainer keeps its DDP wrapper in a local variable; a sharded Lightning strategy
    other than ModelParallelStrategy (FSDP2, tests/test_lightning_fsdp.py) has no wrapper lyactl
    can rebuild: both are refused by name before any step."""
    from types import SimpleNamespace

    from lyactl.errors import InvalidArgumentError
    from lyactl_torch import integrations as I

    factory = lambda backend: None  # noqa: E731  (never called)
    if trainer_kind == "hf":
        pytest.importorskip("transformers")
        cb = I.LyactlCallback(factory)
        with pytest.raises(InvalidArgumentError, match="world_size"):
            cb.on_train_begin(SimpleNamespace(world_size=2), None, None, model=torch.nn.Linear(2, 2))
    else:
        cb = I.LyactlLightningCallback(factory)
        trainer = SimpleNamespace(world_size=2, global_step=0, strategy=SimpleNamespace(model=torch.nn.Linear(2, 2)))
        with pytest.raises(InvalidArgumentError, match="trainer.strategy"):
            cb.on_fit_start(trainer, torch.nn.Linear(2, 2))
