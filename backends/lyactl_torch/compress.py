"""Compress a trained model while training continues (``lyactl compress``, issue 15).

Continued training of ``steps = ceil(tokens / (batch_size seq_len))`` AdamW steps on a
corpus, while a selection method removes structure until the model's FLOPs per token are at
most ``target_flops`` times the original's:

* ``lyactl``: lyactl's controller (:func:`lyactl.app.runconfig.build_controller`) with a
  final budget ``S* = 1 - target_flops`` that counts pruned groups only
  (``BudgetCounts.PRUNED_ONLY``: a frozen group keeps its inference cost, so no freeze meets
  the target; the PI actuator pushes the cheapest-to-lose groups to collapse; certificates
  decide), decisions between ``warmup_frac`` and ``last_frac`` of the run. Freezing is on:
  a block whose certificates say it has converged is frozen, which saves training compute
  (reported apart) at no capacity; ``freeze=False`` turns it off and counts training FLOPs,
  as before (both budgets then agree: nothing is frozen). With ``prior="activation"`` the
  activation importance of the original (:mod:`.importance`, measured on ``calib_batches``
  batches before the first step) ranks what the actuator pushes and the completion prunes,
  instead of ``|g . w|`` (:mod:`lyactl.control.scoring`); layers and residual channels,
  which it does not score, are then left to the certificates;
* ``oneshot``: activation importance of the original (:mod:`.importance`), one event at
  step 0 that meets the target, then training (Minitron's recipe);
* ``measured``: no penalty and no controller: at ``rounds`` points (step 0, then every
  ``round_frac`` of the run) every live group's removal is measured on held-out calibration
  batches and the lowest certified cost per FLOP is pruned, to ``target_flops^((k+1)/rounds)``
  of the original's FLOPs after round ``k`` (:mod:`.removal`, :mod:`lyactl.control.removal_cost`:
  each decision certified harmless where its cost's upper bound is below
  ``remove_eps * loss``, else taken by the budget with the verdict UNKNOWN);
* ``replay``: a given controller (e.g. :class:`lyactl.control.baselines.ReplayController`
  with a random rule at lyactl's schedule).

Optional distillation from the frozen original (Hinton et al. 2015): with temperature
``tau`` and teacher / student logits ``z_t``, ``z_s``,

    L = (1 - alpha) CE(z_s, y) + alpha tau^2 KL(softmax(z_t / tau) || softmax(z_s / tau)),

the KL averaged over tokens. The teacher's forward costs ``2 N_teacher`` FLOPs per token
(``N`` its parameters), counted in ``train_flops`` and its time in ``wall_s``.

FLOPs per token are the backend's training FLOPs ``6 M + A`` (:mod:`.flops`); priced with every
block trainable, their ratio equals the forward (inference) ratio ``(2 M + A/3)``, which is what
the target means: the record's ``inference_flops_ratio`` (= ``flops_per_token_ratio``), checked
against ``target_flops``. The training FLOPs per token at the end, frozen blocks skipping their
weight gradients, are ``training_flops_per_token_after`` (saving ``training_flops_saving``).
The guard sees the language-model loss only.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lyactl.app.runconfig import ControllerSection, build_controller
from lyactl.control.groups import GroupKind
from lyactl.control.scoring import Prior, fixed_prior
from lyactl.control.settled import settled_monitor
from lyactl.errors import InvalidArgumentError, NonFiniteError, bad_arg

from .backend import TorchBackend
from .compress_config import METHODS, PRIORS, CompressConfig
from .corpus import Batches
from .freeze import is_frozen
from .flops import flops_per_token, model_flops_per_token
from .flops_model import flops_with
from .hf import hf_adapters, uniform_constraints
from .importance import activation_importance, oneshot_event
from .loop import Lyactl
from .removal import MeasuredRounds
from .scoring import logits_of

__all__ = ["METHODS", "PRIORS", "CompressConfig", "CompressResult", "logits", "controller_section", "compress"]

@dataclass(frozen=True, eq=False)
class CompressResult:
    """The compressed ``model``, its layout (``live``, ``block_ids``: what a checkpoint
    needs), the applied events and the measurements (``record``, JSON-ready)."""

    model: nn.Module
    live: dict[str, list[int]]
    block_ids: list[int]
    events: tuple[Any, ...]
    outputs: tuple[Any, ...]
    record: dict[str, Any] = field(default_factory=dict)


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``[B, T, V]`` logits of the reference GPT or a Hugging Face causal LM."""
    return logits_of(model(x))


def controller_section(config: CompressConfig) -> ControllerSection:
    """The controller's settings: final budget ``1 - target_flops``, counting pruned groups only
    when freezing is allowed (``config.freeze``); decisions from 10 % to 80 % of the run, freezes
    alone until 95 % (a freeze needs no time to recover; the settled certificate prices the
    learning rate still to come);
    windows and waits scaled to the report interval so that decisions fit."""
    K = config.report_interval
    counts = "pruned_only" if config.freeze else "training_flops"
    return ControllerSection(interval=K, block=config.block, budget=1.0 - config.target_flops, budget_kind="final",
                             budget_counts=counts, u_max=config.u_max,
                             warmup_frac=0.1, last_frac=0.8, last_freeze_frac=0.95 if config.freeze else None,
                             hysteresis=2, window=6, lag=2,
                             max_groups_per_event=256, min_steps_between_events=2 * K, cooldown_steps=5 * K,
                             allow_freeze=config.freeze)


def _lr(step: int, steps: int, config: CompressConfig) -> float:
    """Linear warm-up then cosine to ``min_lr_frac * lr`` (as :func:`lyactl_torch.train.lr_at`)."""
    warm = int(config.warmup_frac * steps)
    if step < warm:
        return config.lr * (step + 1) / warm
    t = min(1.0, (step - warm) / max(1, steps - warm))
    lo = config.min_lr_frac * config.lr
    return lo + (config.lr - lo) * 0.5 * (1.0 + math.cos(math.pi * t))


def _distill_kl(student: torch.Tensor, teacher: torch.Tensor, tau: float) -> torch.Tensor:
    """``tau^2 KL(softmax(z_t / tau) || softmax(z_s / tau))``, mean over tokens."""
    V = student.shape[-1]
    s = F.log_softmax(student.float().reshape(-1, V) / tau, dim=-1)
    t = F.log_softmax(teacher.float().reshape(-1, V) / tau, dim=-1)
    return tau * tau * F.kl_div(s, t, log_target=True, reduction="batchmean")


def _backend(model: nn.Module, config: CompressConfig, live: dict[str, list[int]] | None,
             block_ids: Sequence[int] | None) -> tuple[TorchBackend, torch.optim.Optimizer]:
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.0},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.95), fused=config.device.startswith("cuda"))
    backend = TorchBackend(model, opt, block=config.block, adapters=hf_adapters(config.seq_len), live=live,
                           block_ids=block_ids, measure_path=_settled(config))
    return backend, opt


def _settled(config: CompressConfig) -> bool:
    return config.freeze and config.settled_eps is not None and config.method == "lyactl"


def _extra_monitors(backend: TorchBackend, config: CompressConfig) -> tuple[Any, ...]:
    """The settled-group freeze monitor when it is on (the freeze budget shared by the blocks)."""
    if not _settled(config):
        return ()
    n_blocks = sum(g.kind is GroupKind.LAYER for g in backend.groups())
    return (settled_monitor(config.steps, max(n_blocks, 1), float(config.settled_eps)),)


def _constraints(backend: TorchBackend, config: CompressConfig) -> tuple[Any, ...]:
    cons = tuple(backend.constraints())
    if config.uniform:
        cons += uniform_constraints(backend.model, backend.groups())
    return cons


def _fpt(backend: TorchBackend) -> float:
    """Training FLOPs/token now, frozen blocks skipping their weight gradients."""
    return model_flops_per_token(backend.model, backend.adapter)


def _size(backend: TorchBackend) -> float:
    """Training FLOPs/token of the model as it is, every block priced trainable: three times
    its forward (inference) FLOPs, whatever is frozen (:mod:`.flops`)."""
    return flops_per_token(backend.adapter.cost(backend.model))


def _flops_model(backend: TorchBackend, config: CompressConfig) -> Callable[[np.ndarray], float]:
    """The controller's flops model: with freezing (a pruned-only budget) every block priced
    trainable, so that a block the backend has frozen counts as what it costs to run."""
    if not config.freeze:
        return backend.flops_model
    return lambda status: flops_with(backend.layout, status, trainable=True)


def compress(model: nn.Module, batches: Batches, config: CompressConfig, *,
             live: dict[str, list[int]] | None = None, block_ids: Sequence[int] | None = None,
             controller: Callable[[TorchBackend, tuple[Any, ...]], Any] | None = None,
             on_report: Callable[[Any], None] | None = None, progress: bool = False) -> CompressResult:
    """Continue training ``model`` on ``batches`` while ``config.method`` prunes it to
    ``config.target_flops`` of its FLOPs per token (see the module docstring).

    ``model`` is changed in place (and returned in the result); ``live``/``block_ids``: the
    layout of an already pruned checkpoint. ``controller(backend, constraints)``: the
    controller of ``method="replay"``. ``on_report(output)``: called with every controller
    report (e.g. :meth:`lyactl.control.decision_log.DecisionLog.write`).
    """
    if config.method == "replay" and controller is None:
        raise InvalidArgumentError(bad_arg("controller", "a controller factory for method='replay'", None))
    if batches.seq_len != config.seq_len or batches.batch_size != config.batch_size:
        raise InvalidArgumentError(bad_arg("batches", f"seq_len={config.seq_len}, batch_size={config.batch_size}",
                                           f"seq_len={batches.seq_len}, batch_size={batches.batch_size}"))
    dev = torch.device(config.device)
    model.to(dev).train()
    torch.manual_seed(config.seed)
    teacher = _teacher(model) if config.distill is not None else None
    backend, opt = _backend(model, config, live, block_ids)
    cons = _constraints(backend, config)
    fpt0, size0, steps = _fpt(backend), _size(backend), config.steps
    loop = Lyactl(model, opt, None, interval=config.report_interval, backend=backend, total_steps=steps)
    pre_events: list[Any] = []
    if config.method == "lyactl":
        prior = _prior(backend, batches, config, dev) if config.prior is not None else None
        loop.controller = build_controller(controller_section(config), steps, backend.groups(), cons,
                                           _flops_model(backend, config), prior=prior,
                                           extra_monitors=_extra_monitors(backend, config))
    elif config.method == "replay":
        loop.controller = controller(backend, cons)
    elif config.method == "oneshot":
        pre_events.append(_oneshot(backend, cons, batches, config, dev))
    rounds = _rounds(backend, cons, batches, config, dev, size0, progress) if config.method == "measured" else None
    record = _train(model, teacher, loop, opt, batches, config, dev, on_report, progress,
                    hook=None if rounds is None else rounds)
    if rounds is not None:
        pre_events += rounds.events
        record["rounds"] = rounds.records
        record["measure_flops"] = sum(r["flops"] for r in rounds.records)
        record["train_flops"] += record["measure_flops"]
    record.update({"method": config.method, "prior": config.prior, "freeze": config.freeze,
                   "settled_eps": config.settled_eps if _settled(config) else None, "steps": steps,
                   **_flops_record(backend, fpt0, size0, config.target_flops),
                   "n_params_after": sum(p.numel() for p in model.parameters())})
    events = tuple(pre_events) + tuple(loop.events)
    return CompressResult(model, {k: list(v) for k, v in backend.layout.live.items()}, list(backend.layout.block_ids),
                          events, tuple(loop.outputs), record)


def _flops_record(backend: TorchBackend, fpt0: float, size0: float, target: float) -> dict[str, Any]:
    """The size reached, apart from the training saving: ``flops_per_token_*`` price every block
    trainable (``6 M + A``), so their ratio is the inference ratio, which the target bounds;
    ``training_flops_per_token_*`` are what a step costs, frozen blocks skipping their
    weight gradients (``training_flops_saving = 1 - after / before``)."""
    size1, fpt1 = _size(backend), _fpt(backend)
    ratio = size1 / size0
    frozen = sum(is_frozen(b) for b in backend.adapter.blocks(backend.model))
    return {"flops_per_token_before": size0, "flops_per_token_after": size1, "flops_per_token_ratio": ratio,
            "inference_flops_per_token_before": size0 / 3.0, "inference_flops_per_token_after": size1 / 3.0,
            "inference_flops_ratio": ratio, "training_flops_per_token_before": fpt0,
            "training_flops_per_token_after": fpt1, "training_flops_saving": 1.0 - fpt1 / fpt0,
            "frozen_blocks": int(frozen), "target_flops": target, "reached_target": ratio <= target + 1e-12}


def _teacher(model: nn.Module) -> nn.Module:
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def _activation(backend: TorchBackend, batches: Batches, config: CompressConfig,
                dev: torch.device) -> np.ndarray:
    """``[n_groups]`` activation importance of the model now, in the order of ``backend.groups()``
    (its layout's), on ``calib_batches`` batches drawn apart from the training batches."""
    calib = [torch.from_numpy(batches.batch(10**6 + i)[:, :-1]).to(dev) for i in range(config.calib_batches)]
    return activation_importance(backend.layout, calib, lambda m, x: logits(m, x))


def _prior(backend: TorchBackend, batches: Batches, config: CompressConfig, dev: torch.device) -> Prior:
    """The controller's prior (``config.prior``, named so in every event's meta)."""
    return fixed_prior(_activation(backend, batches, config, dev), len(backend.groups()), str(config.prior))


def _oneshot(backend: TorchBackend, cons: tuple[Any, ...], batches: Batches, config: CompressConfig,
             dev: torch.device) -> Any:
    """Score the original's groups by activations, prune to the target in one event at step 0."""
    scores = _activation(backend, batches, config, dev)
    event = oneshot_event(backend.groups(), cons, scores, backend.flops_model, float(config.target_flops))
    backend.apply(event)
    return event


def _rounds(backend: TorchBackend, cons: tuple[Any, ...], batches: Batches, config: CompressConfig,
            dev: torch.device, size0: float, progress: bool = False) -> MeasuredRounds:
    """Method ``"measured"``'s rounds, calibrated on ``calib_batches`` batches the training
    never draws."""
    if config.calib_batches < 2:
        raise InvalidArgumentError(bad_arg("calib_batches", "at least 2 with method 'measured'", config.calib_batches))
    rows = config.calib_rows or config.batch_size
    xy = torch.cat([torch.from_numpy(batches.batch(10**6 + i)[:rows]) for i in range(config.calib_batches)]).to(dev)
    return MeasuredRounds(backend, cons, xy[:, :-1], xy[:, 1:], config.calib_batches, config.round_steps,
                          config.target_flops, config.remove_eps, lambda: _size(backend), size0, logits, progress)


def _train(model: nn.Module, teacher: nn.Module | None, loop: Lyactl, opt: torch.optim.Optimizer,
           batches: Batches, config: CompressConfig, dev: torch.device, on_report: Callable[[Any], None] | None,
           progress: bool, hook: Callable[[int], bool] | None = None) -> dict[str, Any]:
    """The training loop; returns tokens, training FLOPs (student + teacher), wall, losses.
    ``hook(step)``, optional, runs before each step (its time counts in the wall-clock);
    True means the model changed."""
    from tqdm.auto import tqdm

    steps, tok_step = config.steps, config.batch_size * config.seq_len
    teacher_fpt = 0.0 if teacher is None else 2.0 * sum(p.numel() for p in teacher.parameters())
    fpt, flops, teacher_flops, losses, kls = _fpt(loop.backend), 0.0, 0.0, [], []
    bar = tqdm(total=steps, desc="compress", disable=not progress, dynamic_ncols=True)
    t0 = time.perf_counter()
    for step in range(steps):
        if hook is not None and hook(step):
            fpt = _fpt(loop.backend)
        for g in opt.param_groups:
            g["lr"] = _lr(step, steps, config)
        xy = torch.from_numpy(batches.batch(step)).to(dev)
        x, y = xy[:, :-1], xy[:, 1:]
        with torch.autocast(dev.type, torch.bfloat16, enabled=dev.type == "cuda"):  # bf16 on GPUs
            z = logits(model, x)
            if teacher is not None:
                with torch.no_grad():
                    zt = logits(teacher, x)
        lm = F.cross_entropy(z.float().reshape(-1, z.shape[-1]), y.reshape(-1))
        loss = lm
        if teacher is not None:
            kl = _distill_kl(z, zt, float(config.distill))
            loss = (1.0 - config.alpha) * lm + config.alpha * kl
            kls.append(kl.detach())
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        n_out = len(loop.outputs)
        changed = loop.step(lm.detach(), opt.param_groups[0]["lr"])
        opt.zero_grad(set_to_none=True)
        if on_report is not None and len(loop.outputs) > n_out:
            on_report(loop.outputs[-1])
        flops += fpt * tok_step
        teacher_flops += teacher_fpt * tok_step
        losses.append(lm.detach())
        if changed:
            fpt = _fpt(loop.backend)
        bar.update(1)
    wall = time.perf_counter() - t0
    bar.close()
    loss_values = torch.stack(losses).cpu().numpy().astype(float)
    kl_values = torch.stack(kls).cpu().numpy().astype(float) if kls else np.zeros(0)
    if not np.all(np.isfinite(loss_values)) or not np.all(np.isfinite(kl_values)):
        raise NonFiniteError(bad_arg("training loss", "finite values", "NaN or inf (lower --lr?)"))
    return {"tokens": steps * tok_step, "train_flops": flops + teacher_flops, "student_flops": flops,
            "teacher_flops": teacher_flops, "teacher_flops_per_token": teacher_fpt, "wall_s": wall,
            "distill": config.distill, "alpha": config.alpha if teacher is not None else None,
            "loss_first": float(loss_values[0]), "loss_last": float(loss_values[-1]),
            "kl_last": float(kl_values[-1]) if kl_values.size else None,
            "losses": loss_values[:: max(1, steps // 100)].tolist()}
