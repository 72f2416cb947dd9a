"""Trainer integrations: a Hugging Face ``TrainerCallback`` and a Lightning ``Callback``.

One call each in user code::

    factory = lambda backend: Controller(backend.groups(), backend.constraints(), ControllerConfig(),
                                         flops_model=backend.flops_model)
    trainer = transformers.Trainer(..., callbacks=[LyactlCallback(factory, interval=50)])
    trainer = lightning.Trainer(..., callbacks=[LyactlLightningCallback(factory, interval=50)])

Both build a :class:`lyactl_torch.Lyactl` on the trainer's model and optimizer (the optimizer
object is kept: surgery slices its state in place), call ``controller_factory(backend)``
once, then call ``Lyactl.step`` once per *optimizer* step (not per micro-batch under
gradient accumulation), while the gradients of that step still exist.

Hook choice, transformers (checked against 5.x): the Trainer calls ``on_optimizer_step``
right after ``optimizer.step()``; it then calls ``model.zero_grad()`` and only then
``on_step_end`` (before ``on_log``). Statistics need the gradients, so the step runs in
``on_optimizer_step``. The loss is not passed to callbacks: a forward hook on the model
keeps ``output.loss`` of every training micro-batch (detached, no host sync): the step's
loss is their mean, or their sum when the Trainer passed ``num_items_in_batch`` (the model
then divides each micro-batch's summed loss by the step's token count); a model whose output has no ``loss`` falls
back to the last ``logs["loss"]`` seen by ``on_log`` (NaN before any: the controller
holds on a NaN loss).

Hook choice, Lightning: ``on_before_zero_grad`` fires inside the NEXT step's closure,
after that step's forward, so the graph it built would have stale shapes after surgery;
``on_train_batch_end`` comes after the optimizer step, with gradients still there, and
carries the loss (divided by ``accumulate_grad_batches``: the step's loss is their sum).
An optimizer step happened iff ``trainer.global_step`` advanced.

Multi-process training: Lightning's DDP strategy is supported (the callback rebuilds the
strategy's wrapper after surgery), and so is its ``ModelParallelStrategy`` with FSDP2
(``fully_shard`` in ``configure_model``; :class:`~.fsdp.FSDPBackend`), see
:func:`LyactlLightningCallback`; FSDP1 and DeepSpeed are refused. Through the HF Trainer
it is refused: DDP must be rebuilt after surgery, and the Trainer's training loop holds the
wrapper in a local variable that no callback can replace; use :mod:`lyactl_torch.ddp` in a
plain loop, or Lightning.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from lyactl.errors import InvalidArgumentError, UnsupportedModelError, bad_arg
from lyactl.control.groups import Event

from .backend import TorchBackend
from .gpt_adapter import GPTAdapter
from .groups import ArchitectureAdapter
from .hf import hf_adapters
from .loop import Controller, Lyactl

__all__ = ["ControllerFactory", "LyactlDriver", "LyactlCallback", "LyactlLightningCallback", "unwrap_optimizer"]

ControllerFactory = Callable[[TorchBackend], Controller]


def unwrap_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The innermost ``torch.optim.Optimizer`` (accelerate's and Lightning's wrappers hold
    it as ``.optimizer``)."""
    inner = getattr(optimizer, "optimizer", None)
    while isinstance(inner, torch.optim.Optimizer):
        optimizer, inner = inner, getattr(inner, "optimizer", None)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise InvalidArgumentError(bad_arg("optimizer", "a torch.optim.Optimizer (or a wrapper of one)", type(optimizer).__name__))
    return optimizer


class LyactlDriver:
    """The framework-free part of both callbacks.

    Parameters
    ----------
    controller_factory : callable ``(backend) -> controller``
    interval : int
        Statistics every ``interval`` optimizer steps.
    block, adapters, on_event
        As for :class:`Lyactl`; ``adapters`` default to the HF ones (then the reference GPT).
    """

    def __init__(self, controller_factory: ControllerFactory, interval: int = 50, *, block: int = 64,
                 adapters: Sequence[ArchitectureAdapter] | None = None,
                 on_event: Callable[[Lyactl, list[Event]], None] | None = None) -> None:
        if not callable(controller_factory):
            raise InvalidArgumentError(bad_arg("controller_factory", "a callable (backend) -> controller", controller_factory))
        if not (isinstance(interval, int) and interval >= 1):
            raise InvalidArgumentError(bad_arg("interval", "an int >= 1", interval))
        self.factory, self.interval, self.block, self.on_event = controller_factory, interval, block, on_event
        self.adapters = tuple(hf_adapters() if adapters is None else adapters)
        self.ctl: Lyactl | None = None
        self.loss_sum: torch.Tensor | None = None
        self.n_loss = 0
        self.partial = False
        self.fallback_loss = math.nan

    def find_model(self, root: nn.Module) -> nn.Module:
        """``root`` or its first submodule (pre-order) that an adapter supports."""
        adapters = (*self.adapters, GPTAdapter())
        for m in root.modules():
            if any(a.supports(m) for a in adapters):
                return m
        raise UnsupportedModelError(bad_arg("model", "a module containing a model an adapter supports", type(root).__name__))

    def ensure(self, model: nn.Module, optimizer: Any, make_backend: Callable[..., TorchBackend] | None = None) -> Lyactl:
        """Build the :class:`Lyactl` (and the controller) on first use; ``make_backend``: called
        ``make_backend(net, opt, block=, adapters=)`` (default: a plain :class:`TorchBackend`),
        e.g. :class:`~.ddp.DistributedBackend` or :class:`~.fsdp.FSDPBackend` (statistics
        synchronised, so every rank decides alike)."""
        if self.ctl is None:
            net, opt = self.find_model(model), unwrap_optimizer(optimizer)
            backend = None
            if make_backend is not None:
                backend = make_backend(net, opt, block=self.block, adapters=self.adapters)
            ctl = Lyactl(net, opt, None, interval=self.interval, on_event=self.on_event, backend=backend,
                         block=self.block, adapters=self.adapters)
            ctl.controller = self.factory(ctl.backend)
            self.ctl = ctl
        return self.ctl

    def add_loss(self, loss: torch.Tensor | float, partial: bool = False) -> None:
        """Keep one micro-batch's loss (a tensor stays on its device, no sync).

        ``partial=False``: the micro-batch's own mean (the step's loss is the mean of them);
        ``partial=True``: already its share of the step's mean (the step's loss is the sum).
        """
        t = loss.detach().float() if isinstance(loss, torch.Tensor) else torch.tensor(float(loss))
        self.loss_sum = t if self.loss_sum is None else self.loss_sum + t
        self.n_loss += 1
        self.partial = self.partial or partial

    def optimizer_step(self, lr: float | None = None) -> bool:
        """One optimizer step happened: ``Lyactl.step`` with the mean micro-batch loss."""
        if self.ctl is None:
            raise InvalidArgumentError(bad_arg("optimizer_step", "ensure(model, optimizer) called first", None))
        if self.loss_sum is None:
            loss: torch.Tensor | float = self.fallback_loss
        else:
            loss = self.loss_sum if self.partial else self.loss_sum / self.n_loss
        self.loss_sum, self.n_loss, self.partial = None, 0, False
        return self.ctl.step(loss, lr)


def _hf_base() -> type:
    """The one lazy import of ``transformers`` in this module."""
    try:
        from transformers import TrainerCallback
    except ImportError as exc:
        raise ImportError(bad_arg("transformers", "installed for LyactlCallback (pip install 'lyactl[hf]')", None)) from exc
    return TrainerCallback


def _lightning_base() -> tuple[type, type]:
    """The one lazy import of ``lightning`` in this module: its ``Callback`` and
    ``ModelParallelStrategy`` classes."""
    try:
        from lightning.pytorch import Callback
        from lightning.pytorch.strategies import ModelParallelStrategy
    except ImportError as exc:
        raise ImportError(bad_arg("lightning", "installed for LyactlLightningCallback (pip install 'lyactl[lightning]')", None)) from exc
    return Callback, ModelParallelStrategy


def LyactlCallback(controller_factory: ControllerFactory, interval: int = 50, **driver_kw: Any) -> Any:
    """A ``transformers.TrainerCallback`` driving lyactl (single process; see module doc).

    ``driver_kw`` go to :class:`LyactlDriver` (``block``, ``adapters``, ``on_event``). The
    returned callback's ``driver.ctl`` is the :class:`Lyactl` once training started.
    """
    driver = LyactlDriver(controller_factory, interval, **driver_kw)

    class LyactlTrainerCallback(_hf_base()):
        def __init__(self) -> None:
            self.driver, self.handle = driver, None

        def on_train_begin(self, args: Any, state: Any, control: Any, model: nn.Module | None = None,
                           optimizer: Any = None, **kw: Any) -> None:
            if getattr(args, "world_size", 1) > 1:
                raise InvalidArgumentError(bad_arg("TrainingArguments.world_size", "1 (for DDP: lyactl_torch.ddp in a plain loop, or Lightning)",
                                                   args.world_size))
            self.driver.ensure(model, optimizer)
            self.handle = model.register_forward_hook(self._keep_loss, with_kwargs=True)

        def _keep_loss(self, module: nn.Module, args: Any, kwargs: dict, output: Any) -> None:
            loss = getattr(output, "loss", None) if not isinstance(output, Mapping) else output.get("loss")
            if module.training and isinstance(loss, torch.Tensor):
                # with num_items_in_batch the model divides by the step's token count: a share
                self.driver.add_loss(loss, partial=kwargs.get("num_items_in_batch") is not None)

        def on_optimizer_step(self, args: Any, state: Any, control: Any, model: nn.Module | None = None,
                              optimizer: Any = None, **kw: Any) -> None:
            self.driver.ensure(model, optimizer)
            self.driver.optimizer_step()

        def on_log(self, args: Any, state: Any, control: Any, logs: Mapping[str, float] | None = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                self.driver.fallback_loss = float(logs["loss"])

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.handle is not None:
                self.handle.remove()
                self.handle = None

    return LyactlTrainerCallback()


def LyactlLightningCallback(controller_factory: ControllerFactory, interval: int = 50, *,
                            fsdp_kwargs: Mapping[str, Any] | None = None, **driver_kw: Any) -> Any:
    """A ``lightning.pytorch.Callback`` driving lyactl on the first optimizer of the trainer
    and the first submodule of the LightningModule that an adapter supports.

    The backend follows the strategy (:func:`_backend_for`):

    * one process: a plain :class:`TorchBackend`;
    * DDP (several processes): the statistics are synchronised across ranks
      (:class:`~.ddp.DistributedBackend`: every rank takes the same decisions) and after every
      structural change the strategy's DDP wrapper is rebuilt (:func:`~.ddp.rebuild_ddp`, with
      ``find_unused_parameters`` while a frozen prefix exists), before ``on_event``;
    * ``ModelParallelStrategy`` with ``tensor_parallel_size`` 1 whose ``configure_model``
      applied ``fully_shard`` per block and at the root of the adapted model:
      :class:`~.fsdp.FSDPBackend` (statistics all-reduced, surgery unit by unit; nothing to
      rebuild, the strategy holds the LightningModule itself). ``fsdp_kwargs``: the
      ``fully_shard`` arguments besides ``mesh`` that ``configure_model`` used.

    Other multi-process strategies (``FSDPStrategy``, i.e. FSDP1, and DeepSpeed) are refused
    by name at ``on_fit_start``: their flat parameters cannot be cut in place.
    """
    user_on_event = driver_kw.pop("on_event", None)
    holder: dict[str, Any] = {}

    def on_event(ctl: Lyactl, events: list[Event]) -> None:
        if holder.get("ddp") is not None:
            _rewrap_ddp(holder["ddp"], ctl)
        if user_on_event is not None:
            user_on_event(ctl, events)

    driver = LyactlDriver(controller_factory, interval, on_event=on_event, **driver_kw)
    base, model_parallel = _lightning_base()

    class LyactlLightning(base):
        def __init__(self) -> None:
            self.driver, self.seen = driver, 0

        def on_fit_start(self, trainer: Any, pl_module: nn.Module) -> None:
            holder["make"], rewrap = _backend_for(trainer, lambda: self.driver.find_model(pl_module), model_parallel,
                                                  fsdp_kwargs)
            holder["ddp"] = trainer.strategy if rewrap else None
            self.seen = trainer.global_step

        def on_train_batch_end(self, trainer: Any, pl_module: nn.Module, outputs: Any, batch: Any, batch_idx: int) -> None:
            loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
            if isinstance(loss, torch.Tensor):
                self.driver.add_loss(loss, partial=True)  # Lightning divided it by accumulate_grad_batches
            if trainer.global_step > self.seen:
                self.seen = trainer.global_step
                self.driver.ensure(pl_module, trainer.optimizers[0], holder.get("make"))
                self.driver.optimizer_step()

    return LyactlLightning()


def _backend_for(trainer: Any, adapted: Callable[[], nn.Module], model_parallel: type,
                 fsdp_kwargs: Mapping[str, Any] | None) -> tuple[Callable[..., TorchBackend] | None, bool]:
    """The backend maker for ``trainer.strategy`` (None: a plain :class:`TorchBackend`) and
    whether the strategy's DDP wrapper must be rebuilt after surgery; raises for a strategy
    lyactl cannot drive, naming it. ``adapted()``: the model lyactl will drive."""
    strategy = trainer.strategy
    if isinstance(strategy, model_parallel):
        from .fsdp import FSDPBackend
        from .fsdp_units import units

        tp = strategy.device_mesh["tensor_parallel"].size()
        if tp != 1:
            raise InvalidArgumentError(bad_arg("ModelParallelStrategy tensor_parallel_size", "1 (FSDP2 only)", tp))
        net = adapted()
        if units(net)[:1] != [net]:
            raise InvalidArgumentError(bad_arg(f"configure_model under ModelParallelStrategy ({type(net).__name__})",
                                               "fully_shard applied per block and at the root of the adapted model",
                                               "no fully_shard at its root"))
        return functools.partial(FSDPBackend, fsdp_kwargs=dict(fsdp_kwargs or {})), False
    if trainer.world_size <= 1:
        return None, False
    from torch.nn.parallel import DistributedDataParallel as DDP

    if not isinstance(strategy.model, DDP):
        raise InvalidArgumentError(bad_arg("trainer.strategy", "DDP, or ModelParallelStrategy with fully_shard applied "
                                           "in configure_model, when world_size > 1", type(strategy).__name__))
    from .ddp import DistributedBackend

    return DistributedBackend, True


def _rewrap_ddp(strategy: Any, ctl: Lyactl) -> None:
    """Replace the strategy's DDP wrapper by a fresh one over the changed module (all ranks
    call this at the same step: the decisions are identical)."""
    from .ddp import rebuild_ddp
    from .freeze import frozen_prefix

    kw = {"find_unused_parameters": True} if frozen_prefix(ctl.backend.layout) > 0 else {}
    strategy.model = rebuild_ddp(strategy.model, **kw)
