"""Host-side cost of one statistics report (``TorchBackend.statistics``) on CPU.

On an H200 the report for GPT-2 small cost 35-48 ms against a 65 ms step
(``surgery_h200.json``): far more than its arithmetic (five products and reductions over
124 M parameters, about 1 ms of memory traffic), because it launched a couple of thousand
small kernels, each with its Python and dispatcher overhead. This benchmark measures that
overhead where it can be measured without a GPU: the number of ATen operations one report
dispatches and its wall time, on a model with GPT-2 small's *structure* (12 blocks, 12 heads,
biases, tied embeddings) but tiny widths, so that arithmetic is negligible and the time is
the host-side cost that a GPU run pays as launch overhead. Also run once after a surgery
event (blocks of different shapes: fewer parameters share a class), and the same for one
step of the proximal group-lasso actuator (it runs after *every* optimizer step while the
budget's penalty is on). Writes
``benchmarks/results/stats_dispatch.json``. Not a GPU measurement: the GPU figure needs
``benchmarks/micro/bench_surgery_gpu.py``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import lyactl_torch as L
from lyactl.control.groups import Action, Decision, Event


class _Count(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


def _report(backend, model, opt, x) -> None:
    opt.zero_grad()
    loss = model(x, x)[1]
    loss.backward()
    opt.step()
    backend.observe_step(loss.detach())


def _measure(backend, model, opt, x, reps: int = 30) -> dict:
    times = []
    for _ in range(reps):
        _report(backend, model, opt, x)
        t = time.perf_counter()
        backend.statistics()
        times.append(time.perf_counter() - t)
    _report(backend, model, opt, x)
    with _Count() as c:
        backend.statistics()
    return {"aten_ops": c.n, "median_ms": round(float(np.median(times)) * 1e3, 3),
            "n_params": len(list(model.parameters()))}


def _penalty(backend, reps: int = 50) -> dict:
    """One proximal group-lasso step with 60 random heads and MLP blocks penalised."""
    groups = backend.groups()
    lam = np.zeros(len(groups))
    pick = [i for i, g in enumerate(groups) if g.kind.value in ("head", "mlp_block")]
    lam[np.random.default_rng(0).choice(pick, 60, replace=False)] = 1e-3
    backend.set_penalty(lam)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        backend.apply_penalty()
        times.append(time.perf_counter() - t)
    with _Count() as c:
        backend.apply_penalty()
    backend.set_penalty(np.zeros(len(groups)))
    return {"aten_ops": c.n, "median_ms": round(float(np.median(times)) * 1e3, 3)}


def main() -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    cfg = L.GPTConfig(vocab_size=512, seq_len=32, d_model=24, n_layer=12, n_head=12, head_dim=2, mlp_hidden=96,
                      bias=True)
    model = L.GPT(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    backend = L.TorchBackend(model, opt, block=16)
    x = torch.randint(0, 512, (2, 32))
    before = _measure(backend, model, opt, x)
    penalty = _penalty(backend)
    groups = backend.groups()
    heads = [i for i, g in enumerate(groups) if g.kind.value == "head" and g.layer % 3 == 0][:8]
    ev = Event(0, 1, tuple(Decision(1, groups[i].name, i, Action.PRUNE, ()) for i in heads))
    backend.apply(ev)
    after = _measure(backend, model, opt, x)
    res = {"name": "stats_dispatch", "model": "GPT-2-small structure, d=24", "before_event": before, "penalty_step": penalty,
           "after_event": after, "cpus": os.cpu_count(), "torch": torch.__version__}
    out = Path(__file__).resolve().parents[1] / "results" / "stats_dispatch.json"
    if out.exists():  # the parent implementation's figures, recorded once by hand: keep them
        old = json.loads(out.read_text()).get("previous_implementation")
        if old is not None:
            res["previous_implementation"] = old
    out.write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    print(json.dumps(main()))
