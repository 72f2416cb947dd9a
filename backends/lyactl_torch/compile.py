"""``torch.compile`` of a model whose shapes change during training, three ways.

A structural event (heads, MLP neurons, residual channels or blocks removed) changes the shapes
of some parameters. How much compilation the next step pays depends on how the model was
compiled (:class:`CompileStrategy`):

``whole``
    One graph for the whole model, ``dynamic=False``; after an event the caches are dropped
    (``torch._dynamo.reset()``) and everything is compiled again: the stall grows with the
    model's size (12-18 s per event for GPT-2 small on an H200).
``per-block``
    Each block of ``model.blocks`` is compiled as its own module (``nn.Module.compile``), the
    rest (embeddings, head, loss) runs eagerly. Dynamo's cache is per code object and its guards
    are on the parameters' shapes, so blocks of equal shapes share one graph, and after an event
    only blocks whose shapes are new to the cache compile; an unchanged block keeps its graph.
    Cost: the ops between blocks run eagerly, and each block call checks the guards of all
    graphs of ``Block.forward`` (their number is capped by ``recompile_limit``, raised here to
    ``max_graphs``; past it dynamo silently runs a block eagerly).
``dynamic``
    One graph with symbolic sizes for every dimension, parameters included, and the modules'
    integer attributes (``n_head``) as symbols rather than constants; duck sizing (equal sizes
    get one symbol) is off, so a width that changes away from another equal width does not fail
    a guard. An event then compiles nothing. Cost: the first compile is slower and kernels
    are generated for unknown sizes (measure the step time: ``benchmarks/micro/bench_compile.py``).

These settings are dynamo's global config; they are set only for the duration of each call of
the returned callable (``torch._dynamo.config.patch``), never left set.

Not done here, and why: compiling the next shapes ahead in a background thread (dynamo holds a
global compile lock and the GIL, so on the host the compile competes with the training loop's
Python; a separate process cannot share the in-memory graphs, only inductor's on-disk cache), and
padding widths to buckets (sliced weights would have to be padded with zeros and masked, keeping
the FLOPs the event removed).
"""

from __future__ import annotations

import contextlib
import enum
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch._dynamo
from torch import nn

from lyactl.errors import InvalidArgumentError, bad_arg

__all__ = ["CompileStrategy", "Compiled", "compile_model", "recompile_after_event"]


class CompileStrategy(str, enum.Enum):
    """How a model is compiled (see the module docstring)."""

    WHOLE = "whole"
    PER_BLOCK = "per-block"
    DYNAMIC = "dynamic"


Backend = str | Callable[..., Any]
"""A ``torch.compile`` backend: ``"inductor"``, ``"aot_eager"``, ``"eager"`` or a callable
(e.g. ``torch._dynamo.testing.CompileCounterWithBackend``)."""


@dataclass(frozen=True)
class Compiled:
    """The compiled forward of a model: call it as the model; it sets its dynamo config.

    ``fn`` is what runs (the model itself for ``per-block``, whose blocks carry their compiled
    call, else ``torch.compile(model)``); ``patches`` are the dynamo settings in force during a
    call, as ``(config module, {name: value})`` pairs.
    """

    fn: Callable[..., Any]
    strategy: CompileStrategy
    backend: Backend
    patches: tuple[tuple[Any, dict[str, Any]], ...]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with contextlib.ExitStack() as stack:
            for module, values in self.patches:
                stack.enter_context(module.patch(values))
            return self.fn(*args, **kwargs)


def _strategy(strategy: CompileStrategy | str) -> CompileStrategy:
    try:
        return CompileStrategy(strategy)
    except ValueError:
        choices = ", ".join(s.value for s in CompileStrategy)
        raise InvalidArgumentError(bad_arg("strategy", f"one of {choices}", strategy)) from None


def _blocks(model: nn.Module) -> nn.ModuleList:
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
        raise InvalidArgumentError(bad_arg("model", "a model with a non-empty nn.ModuleList `blocks` for "
                                           "strategy 'per-block'", type(model).__name__))
    return blocks


def _patches(strategy: CompileStrategy, max_graphs: int) -> tuple[tuple[Any, dict[str, Any]], ...]:
    import torch._dynamo.config as dynamo_config
    import torch.fx.experimental._config as fx_config

    if strategy is CompileStrategy.PER_BLOCK:
        return ((dynamo_config, {"recompile_limit": max_graphs}),)
    if strategy is CompileStrategy.DYNAMIC:
        return ((dynamo_config, {"force_parameter_static_shapes": False,
                                 "force_nn_module_property_static_shapes": False,
                                 "allow_unspec_int_on_nn_module": True}),
                (fx_config, {"use_duck_shape": False}))
    return ()


def compile_model(model: nn.Module, strategy: CompileStrategy | str = CompileStrategy.WHOLE, *,
                  backend: Backend = "inductor", max_graphs: int = 64) -> Compiled:
    """Compile ``model`` for training with ``strategy``; returns the callable to use as the model.

    Parameters
    ----------
    model : nn.Module
        For ``per-block``, a model with an ``nn.ModuleList`` ``blocks`` (the reference GPT, or
        any model whose repeated layers are there); its blocks are compiled in place.
    strategy : CompileStrategy or str
        ``"whole"``, ``"per-block"`` or ``"dynamic"``.
    backend : str or callable
        The ``torch.compile`` backend.
    max_graphs : int
        ``per-block``: the most graphs kept for ``Block.forward`` (one per distinct block shape,
        grad mode and input shape). Compilation itself happens at the first call of each shape.
    """
    strategy = _strategy(strategy)
    if not (isinstance(max_graphs, int) and max_graphs >= 1):
        raise InvalidArgumentError(bad_arg("max_graphs", "an int >= 1", max_graphs))
    patches = _patches(strategy, max_graphs)
    if strategy is CompileStrategy.PER_BLOCK:
        for blk in _blocks(model):
            blk.compile(backend=backend, dynamic=False)
        return Compiled(model, strategy, backend, patches)
    if strategy is CompileStrategy.WHOLE:
        torch._dynamo.reset()  # drop graphs of earlier shapes rather than pile up guards
        return Compiled(torch.compile(model, backend=backend, dynamic=False), strategy, backend, patches)
    return Compiled(torch.compile(model, backend=backend, dynamic=True), strategy, backend, patches)


def recompile_after_event(model: nn.Module, compiled: Compiled) -> Compiled:
    """The callable to use after a structural event changed ``model``'s shapes.

    ``whole``: compiled again from scratch (all graphs dropped). ``per-block``: blocks added or
    rebuilt since (without a compiled call) are compiled; the others keep their graphs, and
    blocks whose shapes are new compile at their next call. ``dynamic``: unchanged.
    """
    if compiled.strategy is CompileStrategy.WHOLE:
        return compile_model(model, compiled.strategy, backend=compiled.backend)
    if compiled.strategy is CompileStrategy.PER_BLOCK:
        for blk in _blocks(model):
            if getattr(blk, "_compiled_call_impl", None) is None:
                blk.compile(backend=compiled.backend, dynamic=False)
    return compiled
