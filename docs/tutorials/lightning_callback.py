"""Lightning: one callback (lyactl_torch.integrations.LyactlLightningCallback)."""

import lightning.pytorch as pl
import torch

from lyactl.control.budget import BudgetConfig
from lyactl.control.controller import Controller, ControllerConfig
from lyactl.control.monitors import MonitorConfig
from lyactl_torch import GPT, GPTConfig
from lyactl_torch.integrations import LyactlLightningCallback

STEPS = 40


class LitGPT(pl.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.gpt = GPT(GPTConfig(vocab_size=64, seq_len=16, d_model=64, n_layer=2, n_head=2, head_dim=32,
                                 mlp_hidden=128))

    def training_step(self, batch, batch_idx):
        (x,) = batch
        return self.gpt(x[:, :-1], x[:, 1:])[1]

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=3e-3)


def make_controller(backend):
    # a budget (30 % of the FLOPs) drives the cheapest groups to zero; the collapse certificate
    # then decides. Earliest decision: interval 2 x (window 3 + hysteresis 2 - 1) = step 8
    cfg = ControllerConfig(monitors=MonitorConfig(window=3, lag=1), warmup_steps=4, hysteresis=2,
                           budget=BudgetConfig(target=0.3, total_steps=STEPS, u_max=1.0), last_decision_step=STEPS - 8)
    return Controller(backend.groups(), backend.constraints(), cfg, flops_model=backend.flops_model)


tokens = torch.randint(0, 64, (160, 17), generator=torch.Generator().manual_seed(0))
loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(tokens), batch_size=4)
callback = LyactlLightningCallback(make_controller, interval=2, block=32)
trainer = pl.Trainer(max_steps=STEPS, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, callbacks=[callback])
trainer.fit(LitGPT(), loader)
ctl = callback.driver.ctl
print("reports:", len(ctl.outputs), "events:", len(ctl.events), "decisions:",
      [d.group for e in ctl.events for d in e.decisions])
