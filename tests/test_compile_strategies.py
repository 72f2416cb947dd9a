"""Compile strategies (lyactl_torch.compile): what an event recompiles, counted, never timed.

Graphs are counted with dynamo's ``CompileCounterWithBackend`` (one count per graph compiled);
the backend under it is ``eager`` or ``aot_eager`` so that CI does not pay for inductor.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

pytest.importorskip("torch._dynamo")
from torch._dynamo.testing import CompileCounterWithBackend  # noqa: E402

from lyactl.app.runconfig import COMPILE_STRATEGIES, TrainingSection  # noqa: E402
from lyactl.control.groups import Action, Decision, Event  # noqa: E402
from lyactl.errors import InvalidArgumentError  # noqa: E402
from lyactl_torch import train as train_mod  # noqa: E402
from lyactl_torch.backend import TorchBackend  # noqa: E402
from lyactl_torch.compile import CompileStrategy, compile_model, recompile_after_event  # noqa: E402
from lyactl_torch.corpus import Batches  # noqa: E402
from lyactl_torch.model import GPT, GPTConfig  # noqa: E402

CFG = GPTConfig(vocab_size=64, seq_len=16, d_model=32, n_layer=3, n_head=4, head_dim=8)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _setup(seed: int = 0, cfg: GPTConfig = CFG):
    torch.manual_seed(seed)
    model = GPT(cfg)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    x = torch.randint(0, cfg.vocab_size, (2, cfg.seq_len))
    return model, TorchBackend(model, opt), x


def _prune(backend: TorchBackend, picks: list[tuple[str, int]], used: set[int], eid: int) -> None:
    """Prune the first not-yet-used group of each (kind, layer)."""
    groups, chosen = backend.groups(), []
    for kind, layer in picks:
        i = next(i for i, g in enumerate(groups) if g.kind.value == kind and g.layer == layer and i not in used)
        used.add(i)
        chosen.append(i)
    backend.apply(Event(eid, 0, tuple(Decision(0, groups[i].name, i, Action.PRUNE) for i in chosen)))


def _dynamo_settings() -> tuple:
    import torch._dynamo.config as dc
    import torch.fx.experimental._config as fc

    return (dc.force_parameter_static_shapes, dc.force_nn_module_property_static_shapes,
            dc.allow_unspec_int_on_nn_module, dc.recompile_limit, fc.use_duck_shape)


def _fwd_bwd(fwd, x: torch.Tensor) -> torch.Tensor:
    logits, loss = fwd(x, x)
    loss.backward()
    return logits.detach()


def test_per_block_recompiles_only_the_changed_block_and_matches_eager():
    model, backend, x = _setup()
    before = _dynamo_settings()
    counter = CompileCounterWithBackend("aot_eager")
    fwd = compile_model(model, "per-block", backend=counter)
    torch.testing.assert_close(_fwd_bwd(fwd, x), _eager_logits(model, x), atol=1e-5, rtol=0)
    assert counter.frame_count == 1  # three blocks of one shape share one graph
    used: set[int] = set()
    _prune(backend, [("head", 0)], used, 1)
    fwd = recompile_after_event(model, fwd)
    torch.testing.assert_close(_fwd_bwd(fwd, x), _eager_logits(model, x), atol=1e-5, rtol=0)
    assert counter.frame_count == 2  # only block 0 has a new shape
    _prune(backend, [("head", 1), ("head", 2)], used, 2)
    fwd = recompile_after_event(model, fwd)
    torch.testing.assert_close(_fwd_bwd(fwd, x), _eager_logits(model, x), atol=1e-5, rtol=0)
    assert counter.frame_count == 2  # blocks 1 and 2 now have block 0's shape: cache hit
    assert _dynamo_settings() == before  # set only during calls


def _eager_logits(model: GPT, x: torch.Tensor) -> torch.Tensor:
    """The model run without any compiled call (blocks' compiled calls bypassed)."""
    with torch.no_grad():
        h = model.wte(x) + model.wpe(torch.arange(x.shape[1]))
        for blk in model.blocks:
            h = blk.forward(h)  # forward() itself, not the compiled __call__
        return model.lm_head(model.ln_f(h))


def test_dynamic_does_not_recompile_after_width_changes():
    model, backend, x = _setup(1, GPTConfig(vocab_size=64, seq_len=16, d_model=32, n_layer=2, n_head=4, head_dim=8))
    before = _dynamo_settings()
    counter = CompileCounterWithBackend("eager")
    fwd = compile_model(model, CompileStrategy.DYNAMIC, backend=counter)
    _fwd_bwd(fwd, x)
    assert counter.frame_count == 1
    used: set[int] = set()
    for eid, picks in enumerate([[("head", 0)], [("mlp_block", 1)], [("head", 1)]], start=1):
        _prune(backend, picks, used, eid)
        fwd = recompile_after_event(model, fwd)
        torch.testing.assert_close(_fwd_bwd(fwd, x), _eager_logits(model, x), atol=1e-5, rtol=0)
    assert counter.frame_count == 1
    assert _dynamo_settings() == before


def test_whole_recompiles_everything_after_an_event():
    model, backend, x = _setup(2)
    counter = CompileCounterWithBackend("eager")
    fwd = compile_model(model, "whole", backend=counter)
    _fwd_bwd(fwd, x)
    _prune(backend, [("head", 0)], set(), 1)
    fwd = recompile_after_event(model, fwd)
    torch.testing.assert_close(_fwd_bwd(fwd, x), _eager_logits(model, x), atol=1e-5, rtol=0)
    assert counter.frame_count == 2


def test_bad_arguments_are_named():
    model, _, _ = _setup()
    with pytest.raises(InvalidArgumentError, match="strategy"):
        compile_model(model, "bucketed")
    with pytest.raises(InvalidArgumentError, match="max_graphs"):
        compile_model(model, "per-block", max_graphs=0)
    with pytest.raises(InvalidArgumentError, match="blocks"):
        compile_model(torch.nn.Linear(2, 2), "per-block")


def test_training_section_compile_strategy():
    assert set(COMPILE_STRATEGIES) == {s.value for s in CompileStrategy}
    assert TrainingSection().compile_strategy == "whole"
    assert TrainingSection(compile_strategy="per-block").compile_strategy == "per-block"
    with pytest.raises(InvalidArgumentError, match="training.compile_strategy"):
        TrainingSection(compile_strategy="bucketed")


def test_train_loop_per_block_recompiles_only_changed_blocks(monkeypatch):
    """train() with compile=True, compile_strategy='per-block': an event at step 2 compiles
    one graph (the changed block), not the model again."""
    counter = CompileCounterWithBackend("eager")
    monkeypatch.setattr(train_mod, "compile_model", functools.partial(compile_model, backend=counter))
    torch.manual_seed(3)
    model = GPT(CFG)
    opt = train_mod.build_optimizer(model, TrainingSection(steps=6, warmup=1))
    backend = TorchBackend(model, opt)
    tokens = np.random.default_rng(0).integers(0, CFG.vocab_size, 4000).astype(np.int32)
    cfg = TrainingSection(steps=6, warmup=1, compile=True, compile_strategy="per-block", log_every=100)

    def hook(step: int, loss: torch.Tensor) -> bool:
        if step == 2:
            _prune(backend, [("head", 0)], set(), 1)
            return True
        return False

    res = train_mod.train(model, opt, Batches(tokens, CFG.seq_len, 2, 0), cfg, hooks=[hook])
    assert len(res.fpt) == 2 and res.fpt[1][1] < res.fpt[0][1]
    assert counter.frame_count == 2
