"""Hugging Face Trainer: one callback (lyactl_torch.integrations.LyactlCallback)."""

import torch
import transformers as T

from lyactl.control.budget import BudgetConfig
from lyactl.control.controller import Controller, ControllerConfig
from lyactl.control.monitors import MonitorConfig
from lyactl_torch.integrations import LyactlCallback

T.logging.set_verbosity_error()
STEPS = 40
torch.manual_seed(0)
model = T.GPT2LMHeadModel(T.GPT2Config(vocab_size=64, n_positions=16, n_embd=64, n_layer=2, n_head=2,
                                       n_inner=128, bos_token_id=0, eos_token_id=0))
data = [{"input_ids": x, "labels": x} for x in torch.randint(0, 64, (160, 16), generator=torch.Generator().manual_seed(0))]


def make_controller(backend):
    """Called once with the backend built on the Trainer's model and optimizer."""
    # a budget (30 % of the FLOPs) drives the cheapest groups to zero; the collapse certificate
    # then decides. Earliest decision: interval 2 x (window 3 + hysteresis 2 - 1) = step 8
    cfg = ControllerConfig(monitors=MonitorConfig(window=3, lag=1), warmup_steps=4, hysteresis=2,
                           budget=BudgetConfig(target=0.3, total_steps=STEPS, u_max=1.0), last_decision_step=STEPS - 8)
    return Controller(backend.groups(), backend.constraints(), cfg, flops_model=backend.flops_model)


callback = LyactlCallback(make_controller, interval=2, block=32)
args = T.TrainingArguments(output_dir="hf_tutorial_out", per_device_train_batch_size=4, max_steps=STEPS,
                           learning_rate=3e-3, report_to=[], save_strategy="no", use_cpu=True,
                           disable_tqdm=True, logging_steps=4)
trainer = T.Trainer(model=model, args=args, train_dataset=data, callbacks=[callback])
trainer.train()
ctl = callback.driver.ctl       # the lyactl_torch.Lyactl the callback drives
print("reports:", len(ctl.outputs), "events:", len(ctl.events), "decisions:",
      [d.group for e in ctl.events for d in e.decisions])
