"""Plain PyTorch loop with lyactl: one call after optimizer.step()."""

import torch

from lyactl.control.budget import BudgetConfig
from lyactl.control.controller import Controller, ControllerConfig
from lyactl.control.decision_log import DecisionLog, reverify
from lyactl.control.monitors import MonitorConfig
from lyactl_torch import GPT, GPTConfig, Lyactl

STEPS, INTERVAL = 60, 4
torch.manual_seed(0)
model = GPT(GPTConfig(vocab_size=64, seq_len=16, d_model=64, n_layer=2, n_head=2, head_dim=32, mlp_hidden=128))
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)

# the loop adapter discovers the groups (heads, MLP blocks, layers, residual channels)
ctl = Lyactl(model, optimizer, None, interval=INTERVAL, block=32)
config = ControllerConfig(monitors=MonitorConfig(window=4, lag=1),
                          budget=BudgetConfig(target=0.3, total_steps=STEPS, u_max=1.0),
                          warmup_steps=12, last_decision_step=48, hysteresis=2)
ctl.controller = Controller(ctl.backend.groups(), ctl.backend.constraints(), config,
                            flops_model=ctl.backend.flops_model)  # exact FLOPs of overlapping groups
log = DecisionLog("plain_loop_decisions.jsonl")

data = torch.randint(0, 64, (STEPS, 8, 17), generator=torch.Generator().manual_seed(0))
for x in data:
    optimizer.zero_grad(set_to_none=True)
    _, loss = model(x[:, :-1], x[:, 1:])
    loss.backward()
    optimizer.step()
    changed = ctl.step(loss)          # statistics every INTERVAL steps, then events
    if changed:                       # the structure changed: recompile here if you use torch.compile
        print(f"step {ctl.n_steps}: {[d.group for e in ctl.outputs[-1].events for d in e.decisions]}")

for out in ctl.outputs:               # every controller output, in order (events, restores, releases)
    log.write(out)

print("groups decided:", sum(len(e.decisions) for e in ctl.events), "restored events:", len(ctl.restored))
report = reverify("plain_loop_decisions.jsonl") if ctl.events else None
print("re-verified:", report.ok if report else "no decision")
