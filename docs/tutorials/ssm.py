"""Compress an SSM while it trains: an LRU layer learns a linear system; at step 90 the
StateTruncator cuts its state to 16 real states by certified balanced truncation, writes the
decision and its certificate to decisions.jsonl, and the rollback guard watches the loss (a cut
at step 60, while the loss still falls steeply, is restored by it: try CUT = 60).
The certificates are then re-verified offline, from the log alone."""

import numpy as np
import torch
from torch import nn

from lyactl.analysis.balanced import hinf_error
from lyactl.control.decision_log import DecisionLog, reverify
from lyactl.control.guard import GuardConfig
from lyactl.control.state_truncation import StateTruncationPolicy
from lyactl_torch.ssm import StateTruncator
from lyactl_torch.ssm.lru import LRU, LRUConfig

torch.manual_seed(0)
torch.set_num_threads(1)
H, N, STEPS, CUT, EVERY = 4, 48, 150, 90, 10


class Student(nn.Module):
    """One LRU layer; ``ssm_layers()`` tells the truncator which layers it may cut."""

    def __init__(self) -> None:
        super().__init__()
        self.lru = LRU(LRUConfig(H, N, r_min=0.5, r_max=0.95), torch.Generator().manual_seed(2))

    def ssm_layers(self) -> list[nn.Module]:
        return [self.lru]

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.lru(u)


teacher = LRU(LRUConfig(H, 6, r_min=0.6, r_max=0.9), torch.Generator().manual_seed(1))  # the system to learn
student = Student()
opt = torch.optim.AdamW(student.parameters(), lr=3e-3, weight_decay=0.0)
policy = StateTruncationPolicy(mode="rank", keep=16, start_step=CUT, last_step=CUT, guard=GuardConfig(window=4))
trunc = StateTruncator(student, opt, policy, log=DecisionLog("decisions.jsonl"), interval=EVERY, n_freq=512)

full = student.lru.system()
for step in range(1, STEPS + 1):
    u = torch.randn(8, 64, H)
    with torch.no_grad():
        target = teacher(u)
    loss = torch.nn.functional.mse_loss(student(u), target)
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step % EVERY == 0:
        full = student.lru.system()  # the layer as the truncator is about to see it
    if trunc.step(loss) and trunc.restored and trunc.restored[-1].step < step:
        print(f"step {step}: the guard saw the loss rise and restored the cut of step {trunc.restored[-1].step}")
    elif trunc.events and trunc.events[-1].step == step:
        c = trunc.certificates[-1]
        print(f"step {step}: {c.layer} {c.method}: real states {c.states_before} -> {c.states_after} "
              f"(modes {c.modes_before} -> {c.modes_after})")
        print(f"  largest HSVs {np.round(c.hsv[:4], 4).tolist()}  discarded {len(c.discarded)}, sum {sum(c.discarded):.4g}")
        print(f"  certified ||G - G_r||_inf <= {c.bound:.4g}; measured on the written layer {c.error:.4g} "
              f"({c.n_freq}-point grid)")
        again = hinf_error(full, student.lru.system(), n_freq=1024, real_output=True)  # independent numpy check
        print(f"  core hinf_error {again:.4g} <= bound: {bool(again <= c.bound)}")
    if step % 30 == 0 or step == STEPS:
        print(f"step {step:3d}  loss {loss.item():.4f}  modes {student.lru.n_state}")

print(trunc.summary())
report = reverify("decisions.jsonl")  # lyactl alone: recompute each bound from its discarded HSVs
print(f"re-verified offline: {report.n_certificates} certificates, ok: {report.ok}")
if not (report.ok and report.n_certificates >= 1):
    raise SystemExit(f"certificates did not re-verify: {report.failures}")
