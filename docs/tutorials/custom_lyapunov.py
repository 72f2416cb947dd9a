"""A user's own Lyapunov functions, symbolic (sympy) and numeric (a callable), deciding
pruning next to the built-in monitors."""

import numpy as np
import sympy
import torch

from lyactl.control.budget import BudgetConfig
from lyactl.control.controller import Controller, ControllerConfig
from lyactl.control.decision_log import DecisionLog, reverify
from lyactl.control.monitors import MonitorConfig, Role, contribution_monitor, convergence_monitor, movement_monitor
from lyactl.control.user_monitors import Below, Decreases, user_monitor
from lyactl_torch import GPT, GPTConfig, Lyactl

# Symbolic: V = w_sq + dw_sq (squared norm plus squared last displacement). The group counts
# as collapsed when V contracts by 5 % per report over the whole window AND V is tiny.
w_sq, dw_sq = sympy.symbols("w_sq dw_sq")
shrinking = user_monitor("shrinking", Role.COLLAPSED, w_sq + dw_sq, Decreases(alpha=0.05))
tiny = user_monitor("tiny", Role.COLLAPSED, w_sq + dw_sq, Below(bound=1e-8))

# Numeric: any function of the window arrays (dict name -> [W, n_groups]) returning [W, n_groups];
# opaque to re-verification, which then takes its logged V_k as given.
def rms_weight(arrays):
    return np.sqrt(arrays["w_sq"])

small_rms = user_monitor("small_rms", Role.COLLAPSED, rms_weight, Below(bound=1e-4))

cfg = MonitorConfig(window=4, lag=1)
monitors = (convergence_monitor(cfg), movement_monitor(cfg), contribution_monitor(cfg), shrinking, tiny, small_rms)

STEPS = 60
torch.manual_seed(0)
model = GPT(GPTConfig(vocab_size=64, seq_len=16, d_model=64, n_layer=2, n_head=2, head_dim=32, mlp_hidden=128))
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
ctl = Lyactl(model, optimizer, None, interval=4, block=32)
config = ControllerConfig(monitors=cfg, budget=BudgetConfig(target=0.3, total_steps=STEPS, u_max=1.0),
                          warmup_steps=12, last_decision_step=48, hysteresis=2)
# a role holds only if ALL its monitors hold: here COLLAPSED = shrinking and tiny and small_rms
ctl.controller = Controller(ctl.backend.groups(), ctl.backend.constraints(), config, monitors=monitors,
                            flops_model=ctl.backend.flops_model)
log = DecisionLog("custom_lyapunov_decisions.jsonl")

data = torch.randint(0, 64, (STEPS, 8, 17), generator=torch.Generator().manual_seed(0))
for x in data:
    optimizer.zero_grad(set_to_none=True)
    loss = model(x[:, :-1], x[:, 1:])[1]
    loss.backward()
    optimizer.step()
    ctl.step(loss)

for out in ctl.outputs:
    log.write(out)

for event in ctl.events:
    for d in event.decisions:
        print(d.step, d.group, d.action.value, [c.monitor for c in d.certificates])
if ctl.events:
    print("re-verified:", reverify("custom_lyapunov_decisions.jsonl").ok)
