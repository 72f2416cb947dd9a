"""Run by ``tests/test_lightning_fsdp.py`` under ``torch.distributed.run`` (2 CPU processes,
gloo): Lightning's ``ModelParallelStrategy`` (data-parallel size 2, tensor-parallel size 1)
with a LightningModule whose ``configure_model`` applies FSDP2's ``fully_shard`` per block
and at the GPT's root, driven by ``LyactlLightningCallback``. A controller that decides
FROM the synchronised statistics prunes the lowest-``g_sq`` head and MLP group at its first
report and freezes block 0 at its second; each rank saves what it saw to ``OUT/rank{r}.pt``
(the gathered parameters in model order: the same all-gathers on both ranks)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "backends")]

import lightning.pytorch as pl  # noqa: E402
from lightning.pytorch.strategies import ModelParallelStrategy  # noqa: E402
from scripted import ArgminController  # noqa: E402
from torch.distributed.fsdp import fully_shard  # noqa: E402
from torch.distributed.tensor import DTensor  # noqa: E402

from lyactl_torch.integrations import LyactlLightningCallback  # noqa: E402
from lightning_ddp_run import Module as DDPModule, data_loader  # noqa: E402  (the same model and data)

STEPS = 8


class Module(DDPModule):
    """The DDP test's module, sharded by FSDP2 in ``configure_model``."""

    def configure_model(self):
        mesh = self.device_mesh["data_parallel"]
        for blk in self.gpt.blocks:
            fully_shard(blk, mesh=mesh)
        fully_shard(self.gpt, mesh=mesh)


def main(out: Path) -> None:
    torch.set_num_threads(1)
    loader = data_loader()
    shapes = []
    cb = LyactlLightningCallback(lambda backend: ArgminController(backend.groups()), interval=2, block=16,
                                 on_event=lambda ctl, events: shapes.append(
                                     {n: tuple(p.shape) for n, p in module.gpt.named_parameters()}))
    module = Module()
    strategy = ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1)
    trainer = pl.Trainer(max_steps=STEPS, accelerator="cpu", devices=2, strategy=strategy, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[cb])
    start = {n: tuple(p.shape) for n, p in module.gpt.named_parameters()}  # before configure_model: plain
    trainer.fit(module, loader)
    ctl = cb.driver.ctl
    torch.save({"events": [[(d.group, d.action.value) for d in e.decisions] for e in ctl.events],
                "stats": [np.stack([s.g_sq, s.w_sq]) for s in ctl.stats], "loss": [s.loss for s in ctl.stats],
                "backend": type(ctl.backend).__name__, "start": start, "shapes": shapes,
                "sharded": all(isinstance(p, DTensor) for p in module.gpt.parameters()),
                "frozen": sorted(n for n, p in module.gpt.named_parameters() if not p.requires_grad),
                "params": {n: p.full_tensor().detach() for n, p in module.gpt.named_parameters()},
                "local_rows": {n: p.to_local().shape[0] for n, p in module.gpt.named_parameters()},
                "steps": trainer.global_step, "world": trainer.world_size},
               out / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
