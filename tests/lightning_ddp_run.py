"""Run by ``tests/test_lightning_ddp.py`` under ``torch.distributed.run`` (2 CPU processes,
gloo): Lightning's DDP strategy with LyactlLightningCallback. A controller that decides FROM
the (synchronised) statistics prunes the lowest-g_sq head and MLP block at its first report
and freezes block 0 at its second; each rank saves what it saw to ``OUT/rank{r}.pt``."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "backends")]

import lightning.pytorch as pl  # noqa: E402
from scripted import ArgminController  # noqa: E402

import lyactl_torch as L  # noqa: E402
from lyactl_torch.integrations import LyactlLightningCallback  # noqa: E402


class Module(pl.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)  # the same initial weights on every rank
        self.gpt = L.GPT(L.GPTConfig(vocab_size=29, seq_len=16, d_model=64, n_layer=2, n_head=4, head_dim=16,
                                     mlp_hidden=192))

    def training_step(self, batch, batch_idx):
        (x,) = batch
        return self.gpt(x[:, :-1], x[:, 1:])[1]

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=3e-3)


def data_loader() -> torch.utils.data.DataLoader:
    """64 sequences of 17 random tokens, batches of 2 (Lightning shards them over the ranks)."""
    data = torch.randint(0, 29, (64, 17), generator=torch.Generator().manual_seed(0))
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data), batch_size=2)


def main(out: Path) -> None:
    torch.set_num_threads(1)
    loader = data_loader()
    wrappers, in_use = [], []  # the wrapper after each event; is the step after it using it?
    cb = LyactlLightningCallback(lambda backend: ArgminController(backend.groups()), interval=2,
                                 on_event=lambda ctl, events: wrappers.append(trainer.strategy.model))

    class Watch(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if wrappers:
                in_use.append(trainer.strategy.model is wrappers[-1])

    module = Module()
    trainer = pl.Trainer(max_steps=8, accelerator="cpu", devices=2, strategy="ddp", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[cb, Watch()])
    trainer.fit(module, loader)
    ctl = cb.driver.ctl
    torch.save({"events": [[(d.group, d.action.value) for d in e.decisions] for e in ctl.events],
                "stats": [np.stack([s.g_sq, s.w_sq]) for s in ctl.stats], "loss": [s.loss for s in ctl.stats],
                "shapes": {n: tuple(p.shape) for n, p in module.gpt.named_parameters()},
                "params": {n: p.detach().clone() for n, p in module.gpt.named_parameters()},
                "rebuilt": [isinstance(w, torch.nn.parallel.DistributedDataParallel) and w.module is module
                            for w in wrappers],
                "find_unused": [w.find_unused_parameters for w in wrappers], "in_use": in_use,
                "steps": trainer.global_step, "world": trainer.world_size},
               out / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
