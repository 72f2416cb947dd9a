"""The backend's path-end gradient statistic ``gdw`` (lyactl_torch.stats, ``measure_path``):
equal to a direct computation, lagged one report, NaN where it cannot be measured."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import lyactl_torch as L  # noqa: E402
from lyactl_torch.model import GPT, GPTConfig  # noqa: E402


def _model(seed: int = 0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=64, seq_len=8, d_model=32, n_layer=2, n_head=2, head_dim=16, mlp_hidden=64))


def _step(model, opt, k: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 + k)
    x = torch.randint(0, 64, (4, 9), generator=g)
    opt.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(x[:, :-1]).reshape(-1, 64), x[:, 1:].reshape(-1))
    loss.backward()
    opt.step()
    return loss.detach()


def _layer_params(backend, gi: int):
    blk = backend.layout.adapter.blocks(backend.model)[backend.layout.block_ids.index(int(backend.groups()[gi].layer))]
    return list(blk.parameters())


def test_gdw_is_the_next_gradient_dotted_with_the_last_interval():
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    b = L.TorchBackend(model, opt, stats_dtype=torch.float64, measure_path=True)
    layers = [i for i, g in enumerate(b.groups()) if g.kind.name == "LAYER"]
    w0 = {i: [p.detach().clone() for p in _layer_params(b, i)] for i in layers}
    for k in range(3):
        b.observe_step(_step(model, opt, k))
    first = b.statistics()  # report 1: no earlier interval
    assert np.isnan(first.gdw).all()
    w1 = {i: [p.detach().clone() for p in _layer_params(b, i)] for i in layers}
    b.observe_step(_step(model, opt, 3))  # the step after the report: its gradient is read here
    grads = {i: [p.grad.detach().clone() for p in _layer_params(b, i)] for i in layers}
    b.observe_step(_step(model, opt, 4))
    second = b.statistics()
    for i in layers:
        direct = sum(float((g.double() * (a.double() - c.double())).sum())
                     for g, a, c in zip(grads[i], w1[i], w0[i]))
        assert second.gdw[i] == pytest.approx(direct, rel=1e-6, abs=1e-12)
    assert np.isfinite(second.gdw).all()


def test_gdw_nan_without_measure_path_and_after_a_structural_change():
    model = _model(1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    off = L.TorchBackend(model, opt)
    for k in range(2):
        off.observe_step(_step(model, opt, k))
        assert np.isnan(off.statistics().gdw).all()
    on = L.TorchBackend(model, opt, measure_path=True)
    on.observe_step(_step(model, opt, 5))
    on.statistics()
    on._rebuild()  # what every applied event does: the pending displacement is dropped
    on.observe_step(_step(model, opt, 6))
    assert np.isnan(on.statistics().gdw).all()
