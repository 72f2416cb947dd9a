"""A strong, plain pretraining loop for the reference GPT, with lyactl plugged in.

bf16 autocast, optional ``torch.compile`` (after a structural event recompiled as
``compile_strategy`` says: all of it, the changed blocks, or nothing; :mod:`.compile`), fused
AdamW with decoupled weight decay on matrices only, linear warm-up then cosine decay to
``min_lr_frac * lr``, gradient clipping. The loop is what the benchmarks and the demo run; a
user's own loop needs only the one ``Lyactl.step`` call (see :mod:`lyactl_torch.loop`).

Timing: wall-clock is measured with host timers around the whole loop, with a device sync at
the start, at every logging step (the loss is read there anyway) and at the end; nothing else
synchronises. Compilation is reported apart as the excess of each first step after a
(re)compile over the median step time.

Resilience: run checkpoints every ``checkpoint_every`` steps (atomic, checksummed, the newest
two kept; see :mod:`.run_state`) and ``resume=True`` continue a killed run exactly where its
last good checkpoint left it; the wall-clock of a resumed run adds up its segments and
includes the checkpoint writes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from lyactl.app.runconfig import TrainingSection
from lyactl.errors import InvalidArgumentError, bad_arg

from .backend_state import check_checkpointable
from .compile import compile_model, recompile_after_event
from .corpus import Batches
from .flops import training_flops_per_token
from .loop import Lyactl
from .run_state import list_checkpoints, load_run, quarantine_newer, restore_run, save_run

__all__ = ["TrainConfig", "RunResult", "lr_at", "build_optimizer", "train"]


TrainConfig = TrainingSection
"""The training loop's config: the run config's ``[training]`` section itself
(:class:`lyactl.app.runconfig.TrainingSection`, validated, errors named ``training.<key>``)."""


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
    loop: Lyactl | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 0,
    resume: bool = False,
    keep_checkpoints: int = 2,
) -> RunResult:
    """Train ``model`` for ``cfg.steps`` steps on ``batches``; returns the measurements.

    ``loop`` (a :class:`~lyactl_torch.loop.Lyactl`) is called first after every
    ``optimizer.step()`` (as the hook ``loop.step(loss)``), then ``hooks``; its state
    (controller, held slices, ...) is part of every checkpoint.

    Checkpoints (:mod:`.run_state`): with ``checkpoint_every = n > 0``, after every
    ``n``-th step and after the last one a run checkpoint goes to ``checkpoint_dir``
    (the newest ``keep_checkpoints`` are kept; a fresh run refuses a folder that already
    holds checkpoints). With ``resume=True`` the newest good checkpoint there (if any) is
    loaded into ``model``, ``optimizer`` and ``loop``, which must be built exactly as at
    the start of the run, and training continues at its step: the losses, decisions and
    final weights equal those of an uninterrupted run (bitwise on CPU). The state of
    ``hooks`` is not saved (keep them stateless). A checkpoint that cannot be written
    raises :class:`~lyactl.errors.CheckpointError` (the older ones stay intact).
    """
    dev = torch.device(cfg.device)
    start, res, first_steps = _begin(model, optimizer, loop, checkpoint_dir, checkpoint_every, resume,
                                     keep_checkpoints)
    all_hooks = ([lambda step, loss: loop.step(loss)] if loop is not None else []) + list(hooks)
    fwd = _compiled(model, cfg)
    tokens_per_step = batches.batch_size * batches.seq_len
    fpt = training_flops_per_token(model, seq_len or batches.seq_len)
    if start == 0:
        res.fpt.append((0, fpt))
    _sync(dev)
    clock = _Clock(res.wall_s, time.perf_counter(), start)
    for step in range(start, cfg.steps):
        loss = _one_step(model, fwd, optimizer, batches, cfg, dev, step)
        changed = False
        for hook in all_hooks:
            changed |= bool(hook(step, loss.detach()))
        optimizer.zero_grad(set_to_none=True)
        res.train_flops += fpt * tokens_per_step
        res.tokens += tokens_per_step
        if step in first_steps or changed or (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            clock.log(res, step, loss, dev)
        if changed:
            fwd = recompile_after_event(model, fwd) if cfg.compile else fwd
            fpt = training_flops_per_token(model, seq_len or batches.seq_len)
            res.fpt.append((step + 1, fpt))
            res.peak_mem.append((step, _peak_mem(dev)))
            first_steps.append(step + 1)
        if checkpoint_every and ((step + 1) % checkpoint_every == 0 or step + 1 == cfg.steps):
            res.wall_s = clock.wall()
            save_run(Path(checkpoint_dir), step=step + 1, model=model, optimizer=optimizer, loop=loop,
                     result=res.to_json(), extra={"first_steps": list(first_steps)}, keep=keep_checkpoints)
    _sync(dev)
    res.wall_s = clock.wall()
    if start < cfg.steps:
        res.peak_mem.append((cfg.steps, _peak_mem(dev)))
    res.compile_s = _compile_seconds(res.step_ms, first_steps)
    return res


@dataclass
class _Clock:
    """Wall-clock of the run: ``wall0`` seconds of earlier segments (before a resume)
    plus this one since ``t_start``; ``t_mark``/``mark_step`` of the last logged step."""

    wall0: float
    t_start: float
    mark_step: int
    t_mark: float = math.nan

    def __post_init__(self) -> None:
        self.t_mark = self.t_start

    def wall(self) -> float:
        return self.wall0 + time.perf_counter() - self.t_start

    def log(self, res: RunResult, step: int, loss: torch.Tensor, dev: torch.device) -> None:
        """Record the loss and the mean step time since the last logged step (one sync)."""
        _sync(dev)
        now = time.perf_counter()
        res.step_ms.append((step, 1e3 * (now - self.t_mark) / max(1, step + 1 - self.mark_step)))
        res.losses.append((step, float(loss.detach())))
        self.t_mark, self.mark_step = now, step + 1


def _one_step(model: torch.nn.Module, fwd: Any, optimizer: torch.optim.Optimizer, batches: Batches,
              cfg: TrainConfig, dev: torch.device, step: int) -> torch.Tensor:
    """Learning rate, forward, backward, clipping, ``optimizer.step()``; returns the loss."""
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
    return loss


def _begin(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loop: Lyactl | None,
           folder: str | Path | None, every: int, resume: bool, keep: int) -> tuple[int, RunResult, list[int]]:
    """Validate the checkpoint options; on ``resume`` load the newest good checkpoint.
    Returns ``(first step, result so far, first steps after (re)compiles)``."""
    if not (isinstance(every, int) and not isinstance(every, bool) and every >= 0):
        raise InvalidArgumentError(bad_arg("checkpoint_every", "an int >= 0", every))
    if not (isinstance(keep, int) and keep >= 1):
        raise InvalidArgumentError(bad_arg("keep_checkpoints", "an int >= 1", keep))
    if (every or resume) and folder is None:
        raise InvalidArgumentError(bad_arg("checkpoint_dir", "a folder when checkpoint_every > 0 or resume=True", None))
    if every and loop is not None:
        check_checkpointable(loop)
    if not resume:
        if every and list_checkpoints(folder):
            raise InvalidArgumentError(bad_arg("checkpoint_dir", "a folder without checkpoints for a fresh run "
                                               "(or resume=True)", str(folder)))
        return 0, RunResult(), [0]
    state = load_run(Path(folder))
    if state is None:
        return 0, RunResult(), [0]
    restore_run(state, model, optimizer, loop)
    if state.skipped:
        quarantine_newer(folder, state.step)
    return state.step, _result_from(state.payload["result"]), list(state.payload["extra"]["first_steps"])


def _result_from(saved: dict[str, Any]) -> RunResult:
    """A :class:`RunResult` from its saved ``to_json()`` (pairs back to tuples)."""
    fields = {k: v for k, v in saved.items() if k in RunResult.__dataclass_fields__}
    for k in ("losses", "fpt", "step_ms", "peak_mem"):
        fields[k] = [tuple(x) for x in fields.get(k, [])]
    return RunResult(**fields)


def _compiled(model: torch.nn.Module, cfg: TrainConfig):
    """The model, or with ``compile`` its compiled forward (``compile_strategy``, :mod:`.compile`)."""
    return compile_model(model, cfg.compile_strategy) if cfg.compile else model


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
