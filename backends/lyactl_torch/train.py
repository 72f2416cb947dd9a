"""A strong, plain pretraining loop for the reference GPT, with lyactl plugged in.

bf16 autocast, optional ``torch.compile`` (recompiled after every structural event), fused
AdamW with decoupled weight decay on matrices only, linear warm-up then cosine decay to
``min_lr_frac * lr``, gradient clipping. The loop is what the benchmarks and the demo run; a
user's own loop needs only the one ``Lyactl.step`` call (see :mod:`lyactl_torch.loop`).

Timing: wall-clock is measured with host timers around the whole loop, with a device sync at
the start, at every logging step (the loss is read there anyway) and at the end; nothing else
synchronises. Compilation is reported apart as the excess of each first step after a
(re)compile over the median step time.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from lyactl.errors import InvalidArgumentError, bad_arg

from .corpus import Batches
from .flops import training_flops_per_token

__all__ = ["TrainConfig", "RunResult", "lr_at", "build_optimizer", "train"]


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one pretraining run (validated on construction)."""

    steps: int
    lr: float = 1e-3
    warmup: int = 100
    min_lr_frac: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    device: str = "cpu"
    bf16: bool = False
    compile: bool = False
    log_every: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {
            "steps": self.steps >= 1,
            "lr": math.isfinite(self.lr) and self.lr > 0,
            "warmup": 0 <= self.warmup <= self.steps,
            "min_lr_frac": 0 <= self.min_lr_frac <= 1,
            "weight_decay": self.weight_decay >= 0,
            "log_every": self.log_every >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise InvalidArgumentError(bad_arg(f"TrainConfig.{name}", "a valid value", getattr(self, name)))


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``lr`` over ``warmup`` steps, then cosine to ``min_lr_frac * lr``
    at ``steps``: ``lr_k = lr_min + (lr - lr_min) (1 + cos(pi t)) / 2``, t in [0, 1]."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    lo = cfg.min_lr_frac * cfg.lr
    return lo + (cfg.lr - lo) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; weight decay on parameters with 2 or more dims only; fused on CUDA."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    other = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": other, "weight_decay": 0.0}]
    fused = cfg.device.startswith("cuda")
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=fused)


@dataclass
class RunResult:
    """What a run measured (mutable while the run goes; plain data afterwards)."""

    wall_s: float = 0.0
    compile_s: float = 0.0
    train_flops: float = 0.0
    tokens: int = 0
    losses: list[tuple[int, float]] = field(default_factory=list)
    fpt: list[tuple[int, float]] = field(default_factory=list)
    step_ms: list[tuple[int, float]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    peak_mem: list[tuple[int, float]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


StepHook = Callable[[int, torch.Tensor], bool]
"""Called after ``optimizer.step()`` as ``hook(step, loss)``; returns True when the model's
structure changed (the loop then recompiles and re-counts FLOPs)."""


def train(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Batches,
    cfg: TrainConfig,
    *,
    hooks: Sequence[StepHook] = (),
    seq_len: int | None = None,
) -> RunResult:
    """Train ``model`` for ``cfg.steps`` steps on ``batches``; returns the measurements."""
    dev = torch.device(cfg.device)
    res = RunResult()
    fwd = _compiled(model, cfg)
    tokens_per_step = batches.batch_size * batches.seq_len
    fpt = training_flops_per_token(model, seq_len or batches.seq_len)
    res.fpt.append((0, fpt))
    _sync(dev)
    t_start = time.perf_counter()
    t_mark, mark_step, first_steps = t_start, 0, [0]
    for step in range(cfg.steps):
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        xy = torch.from_numpy(batches.batch(step)).to(dev, non_blocking=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            _, loss = fwd(xy[:, :-1], xy[:, 1:])
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        changed = False
        for hook in hooks:
            changed |= bool(hook(step, loss.detach()))
        optimizer.zero_grad(set_to_none=True)
        res.train_flops += fpt * tokens_per_step
        res.tokens += tokens_per_step
        if step in first_steps or changed or (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            _sync(dev)
            now = time.perf_counter()
            res.step_ms.append((step, 1e3 * (now - t_mark) / max(1, step + 1 - mark_step)))
            res.losses.append((step, float(loss)))
            t_mark, mark_step = now, step + 1
        if changed:
            fwd = _compiled(model, cfg)
            fpt = training_flops_per_token(model, seq_len or batches.seq_len)
            res.fpt.append((step + 1, fpt))
            res.peak_mem.append((step, _peak_mem(dev)))
            first_steps.append(step + 1)
    _sync(dev)
    res.wall_s = time.perf_counter() - t_start
    res.peak_mem.append((cfg.steps, _peak_mem(dev)))
    res.compile_s = _compile_seconds(res.step_ms, first_steps)
    return res


def _compiled(model: torch.nn.Module, cfg: TrainConfig):
    if not cfg.compile:
        return model
    import torch._dynamo

    torch._dynamo.reset()  # shapes changed: drop old graphs rather than pile up guards
    return torch.compile(model, dynamic=False)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _peak_mem(dev: torch.device) -> float:
    """Peak allocated GPU memory (GiB) since the last call; resets the peak. NaN on CPU."""
    if dev.type != "cuda":
        return math.nan
    peak = torch.cuda.max_memory_allocated(dev) / 2**30
    torch.cuda.reset_peak_memory_stats(dev)
    return peak


def _compile_seconds(step_ms: list[tuple[int, float]], first_steps: list[int]) -> float:
    """Excess time of the first step after each (re)compile over the median step time."""
    if len(step_ms) < 3:
        return 0.0
    typical = float(np.median([ms for _, ms in step_ms[1:]]))
    firsts = {s for s in first_steps}
    return sum(max(0.0, ms - typical) / 1e3 for s, ms in step_ms if s in firsts)
