"""DistributedDataParallel: identical decisions on every rank, the wrapper rebuilt after events.

Run with ``torchrun --nproc_per_node=N ddp.py``; without torchrun it starts a one-process
group (gloo, CPU) so that it runs anywhere.
"""

import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from lyactl.control.budget import BudgetConfig
from lyactl.control.controller import Controller, ControllerConfig
from lyactl.control.monitors import MonitorConfig
from lyactl_torch import GPT, GPTConfig
from lyactl_torch.ddp import DistributedLyactl

if "RANK" not in os.environ:          # single process, for the docs test: on a free port
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
rank, STEPS = dist.get_rank(), 40

torch.manual_seed(0)                  # the same initial weights on every rank
model = GPT(GPTConfig(vocab_size=64, seq_len=16, d_model=64, n_layer=2, n_head=2, head_dim=32, mlp_hidden=128))
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
ctl = DistributedLyactl(DDP(model), optimizer, None, interval=4, block=32)
cfg = ControllerConfig(monitors=MonitorConfig(window=4, lag=1), budget=BudgetConfig(target=0.3, total_steps=STEPS),
                       warmup_steps=8, last_decision_step=32, hysteresis=2)
ctl.controller = Controller(ctl.backend.groups(), ctl.backend.constraints(), cfg, flops_model=ctl.backend.flops_model)

gen = torch.Generator().manual_seed(rank)  # each rank its own batches
for step in range(STEPS):
    x = torch.randint(0, 64, (4, 17), generator=gen)
    optimizer.zero_grad(set_to_none=True)
    loss = ctl.ddp(x[:, :-1], x[:, 1:])[1]   # always the CURRENT wrapper: it is rebuilt after events
    loss.backward()
    optimizer.step()
    ctl.step(loss)

print(f"rank {rank}: events {len(ctl.events)}, shapes {ctl.backend.model.shapes()}")
dist.destroy_process_group()
