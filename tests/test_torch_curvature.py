"""The second-moment curvature ``curv`` of the fused statistics pass (lyactl_torch.stats):
equal to a slow reference from the optimizer state, NaN without a second moment, one host
sync, the other fields unchanged, and it makes the movement / contribution monitors decide."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lyactl.control.groups import ADDITIVE_FIELDS, Action, Decision, Event, GroupKind  # noqa: E402
from test_torch_groups import reference_masks, tiny  # noqa: E402
from test_torch_stats import step  # noqa: E402

import lyactl_torch as L  # noqa: E402
from lyactl_torch import stats as S  # noqa: E402


def reference_curv(model, opt, masks):
    """``sum v_hat w^2 / sum w^2`` per group by a Python loop over groups and parameters."""
    beta2 = {id(p): g["betas"][1] for g in opt.param_groups for p in g["params"]}
    out = np.zeros(len(masks))
    for gi, mask in masks.items():
        num = den = 0.0
        for n, p in model.named_parameters():
            st = opt.state[p]
            w = p.detach().double()[mask[n]]
            v = st["exp_avg_sq"].double()[mask[n]] / (1 - beta2[id(p)] ** float(st["step"]))
            num += float((v * w * w).sum())
            den += float((w * w).sum())
        out[gi] = num / den
    return out


@pytest.mark.parametrize("opt_cls, kw, split", [(torch.optim.AdamW, {"n_kv_head": 2, "bias": True}, True),
                                                (torch.optim.Adam, {"tie": False, "mlp_hidden": 200}, False)])
def test_curv_matches_the_slow_reference(opt_cls, kw, split):
    """``split``: two param groups with different ``beta2``, so the bias corrections differ and
    are applied per class on the device; else one shared correction applied on the host."""
    model = tiny(**kw)
    mlp = [p for n, p in model.named_parameters() if "mlp" in n]
    rest = [p for n, p in model.named_parameters() if "mlp" not in n]
    opt = opt_cls([{"params": mlp, "betas": (0.9, 0.95 if split else 0.999)}, {"params": rest}], lr=1e-2)
    backend = L.TorchBackend(model, opt, stats_dtype=torch.float64)
    masks = reference_masks(model, backend.layout)
    for s in range(3):  # early steps: the bias correction is far from 1
        backend.observe_step(step(model, opt, s))
    got = backend.statistics().curv
    np.testing.assert_allclose(got, reference_curv(model, opt, masks), rtol=1e-5)
    scaled = L.TorchBackend(model, opt, stats_dtype=torch.float64, curv_scale=512.0)
    scaled.observe_step(math.nan)
    np.testing.assert_allclose(scaled.statistics().curv, 512.0 * got, rtol=1e-5)


def test_other_fields_are_unchanged(monkeypatch):
    """Every additive field equals what the pass gives with the curvature switched off."""
    model = tiny(n_layer=2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    backend = L.TorchBackend(model, opt, stats_dtype=torch.float64)
    backend.observe_step(step(model, opt, 0))
    backend.statistics()
    backend.observe_step(step(model, opt, 1))
    prev = backend.plan._prev_stacks
    with_curv = backend.statistics()
    backend.plan.snapshot(prev)  # the same reference for dw_sq
    monkeypatch.setattr(S, "second_moment_of", lambda *a: None)
    without = backend.statistics()
    assert np.isfinite(with_curv.curv).all() and np.isnan(without.curv).all()
    for name in ADDITIVE_FIELDS:
        np.testing.assert_array_equal(getattr(with_curv, name), getattr(without, name), err_msg=name)


def test_nan_without_a_second_moment_and_on_pruned_or_zero_groups():
    model = tiny(n_layer=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)  # first moment, no second
    backend = L.TorchBackend(model, opt)
    backend.observe_step(step(model, opt, 0))
    s = backend.statistics()
    assert np.isfinite(s.m_sq).all() and np.isnan(s.curv).all()

    model = tiny(n_layer=2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    backend = L.TorchBackend(model, opt)
    groups = backend.groups()
    head = next(i for i, g in enumerate(groups) if g.kind is GroupKind.HEAD and g.layer == 0)
    other = next(i for i, g in enumerate(groups) if g.kind is GroupKind.HEAD and g.layer == 1)
    step(model, opt, 0)
    backend.apply(Event(0, 1, (Decision(1, groups[head].name, head, Action.PRUNE),)))
    mask = reference_masks(model, backend.layout)[other]
    with torch.no_grad():
        for n, p in model.named_parameters():
            p[mask[n]] = 0.0  # a collapsed group: w_sq = 0, the quotient is undefined
    backend.observe_step(math.nan)
    s = backend.statistics()
    assert np.isnan(s.curv[head]) and s.w_sq[other] == 0 and np.isnan(s.curv[other])
    live = [i for i in range(len(groups)) if i not in (head, other) and groups[i].layer in (0, 1)]
    assert np.isfinite(s.curv[live]).all() and (s.curv[live] > 0).all()


def test_a_parameter_without_state_makes_its_groups_nan_not_a_partial_sum():
    model = tiny(n_layer=2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    backend = L.TorchBackend(model, opt)
    backend.observe_step(step(model, opt, 0))
    victim = model.blocks[1].mlp.fc.weight
    del opt.state[victim]
    s = backend.statistics()
    layer1 = backend.layout.index["blocks.1"]
    mlp1 = [i for i, g in enumerate(backend.groups()) if g.kind is GroupKind.MLP_BLOCK and g.layer == 1]
    layer0 = backend.layout.index["blocks.0"]
    assert np.isnan(s.curv[layer1]) and np.isnan(s.curv[mlp1]).all() and np.isfinite(s.curv[layer0])


def test_still_exactly_one_host_sync_with_a_tensor_step(request):
    model = tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    backend = L.TorchBackend(model, opt)
    backend.observe_step(step(model, opt, 0))
    assert isinstance(next(iter(opt.state.values()))["step"], torch.Tensor)
    calls = request.getfixturevalue("host_syncs")  # counting starts here
    assert np.isfinite(backend.statistics().curv).all()
    assert calls == {"cpu": 1, "item": 0, "tolist": 0}


def test_step_counter_as_cpu_tensor_or_number_and_unknown_betas():
    """The bias correction ``1 / (1 - beta2^t)`` from a CPU tensor or a plain number (older
    optimizers) is a float; no ``betas`` for the parameter, or no step yet: no estimate.
    (The device-tensor branch, ``capturable`` Adam on a GPU, is not exercised on CPU CI.)"""
    p = torch.nn.Parameter(torch.randn(4, 3))
    opt = torch.optim.Adam([p], lr=1e-2, betas=(0.9, 0.99))
    p.grad = torch.randn(4, 3)
    opt.step()
    opt.step()
    betas = {id(p): 0.99}
    v, c = S.second_moment_of(opt, p, betas)
    assert v is opt.state[p]["exp_avg_sq"] and isinstance(c, float) and c == pytest.approx(1.0 / (1.0 - 0.99**2))
    opt.state[p]["step"] = 2
    assert S.second_moment_of(opt, p, betas)[1] == pytest.approx(c)
    opt.state[p]["step"] = 0
    assert S.second_moment_of(opt, p, betas) is None
    assert S.second_moment_of(opt, p, {}) is None
