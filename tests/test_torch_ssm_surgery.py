"""State truncation of SSM layers: certificates hold on real inputs, nothing truncated changes
nothing, the Adam moment map matches autograd, the optimizer keeps working after surgery."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from hypothesis import given, settings, strategies as st  # noqa: E402

from lyactl.analysis.balanced import hinf_error, lru_truncation  # noqa: E402
from lyactl.errors import InvalidArgumentError  # noqa: E402
from lyactl_torch.ssm.lm import SSMLM, SSMLMConfig  # noqa: E402
from lyactl_torch.ssm.lru import LRU, LRUConfig  # noqa: E402
from lyactl_torch.ssm.s4d import S4DReal, S4DRealConfig  # noqa: E402
from lyactl_torch.ssm.truncate import (balanced_surgery, hsv_proxy_scores, keep_top, magnitude_scores,  # noqa: E402
                                       measured_error, random_scores, select_modes)


def _lru(H, N, seed, r_min=0.5, r_max=0.95):
    torch.manual_seed(seed)
    return LRU(LRUConfig(H, N, r_min=r_min, r_max=r_max, chunk=8), torch.Generator().manual_seed(seed)).double()


def _gain_check(layer, before, u, bound):
    """||y - y_r||_2 <= bound ||u||_2 per batch row (zero initial state, finite horizon)."""
    with torch.no_grad():
        diff = (before - layer(u)).flatten(1).norm(dim=1)
    assert torch.all(diff <= bound * u.flatten(1).norm(dim=1) * (1 + 1e-6) + 1e-9)


@settings(max_examples=12, deadline=None)
@given(H=st.integers(1, 3), N=st.integers(2, 6), seed=st.integers(0, 2**10), cut=st.integers(1, 4))
def test_balanced_surgery_output_within_the_bound(H, N, seed, cut):
    layer = _lru(H, N, seed)
    u = torch.randn(3, 120, H, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    with torch.no_grad():
        before = layer(u)
    rank = max(1, 2 * N - cut)
    try:
        rec = balanced_surgery(layer, None, rank=rank)
    except InvalidArgumentError as exc:  # a rank that splits a repeated HSV / keeps a zero one
        assert "rank" in str(exc)
        return
    cert = rec.certificate()
    assert cert["holds"] and rec.error <= rec.bound * (1 + 1e-6) + 1e-9
    assert rec.bound == pytest.approx(2 * sum(rec.discarded))
    _gain_check(layer, before, u, rec.bound + 1e-6)


def test_truncating_nothing_changes_nothing():
    layer = _lru(3, 5, 0)
    u = torch.randn(2, 60, 3, dtype=torch.float64)
    with torch.no_grad():
        before = layer(u)
    rec = balanced_surgery(layer, None, rank=10)
    assert rec.bound == 0.0 and rec.error < 1e-9 and layer.n_state == 5
    with torch.no_grad():
        assert torch.allclose(layer(u), before, atol=1e-9)


def test_measured_error_agrees_with_the_core():
    layer = _lru(2, 6, 3)
    lam, B, C, D = layer.system()
    tr = lru_truncation(lam, B, C, D, rank=6)
    ours = measured_error((lam, B, C), (tr.A, tr.B, tr.C), n_freq=512)
    core = hinf_error((lam, B, C, D), tr, n_freq=512, real_output=True)
    assert ours == pytest.approx(core, rel=1e-3)
    assert core <= tr.bound * (1 + 1e-9)


@pytest.mark.parametrize("scores", [magnitude_scores, hsv_proxy_scores, random_scores(0)])
@pytest.mark.parametrize("kind", ["lru", "s4d"])
def test_mode_selection_within_the_modal_bound(scores, kind):
    H, N = 3, 8
    layer = _lru(H, N, 1) if kind == "lru" else S4DReal(S4DRealConfig(H, N, chunk=8), torch.Generator().manual_seed(1)).double()
    u = torch.randn(2, 100, H, dtype=torch.float64)
    with torch.no_grad():
        before = layer(u)
    keep = keep_top(scores(layer), 3)
    rec = select_modes(layer, None, keep, rule="x")
    assert layer.n_state == 3 and rec.kept == tuple(int(i) for i in keep)
    assert rec.certificate()["holds"]
    _gain_check(layer, before, u, rec.bound)


def _adam_step(model, opt, idx):
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(idx[:, :-1]).flatten(0, 1), idx[:, 1:].flatten())
    loss.backward()
    opt.step()
    return loss.item()


def _trained_lm():
    """A one-layer SSM LM after three AdamW steps (the optimizer has state), its data."""
    torch.manual_seed(0)
    m = SSMLM(SSMLMConfig(vocab_size=20, d_model=8, n_layer=1, n_state=6, chunk=4), seed=0)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    idx = torch.randint(0, 20, (2, 17))
    for _ in range(3):
        _adam_step(m, opt, idx)
    return m, opt, idx


@pytest.mark.parametrize("policy", ["approx", "reset", "slice"])
def test_optimizer_state_follows_the_surgery(policy):
    m, opt, idx = _trained_lm()
    layer = m.ssm_layers()[0]
    rec = balanced_surgery(layer, opt, rank=6, policy=policy)
    assert layer.n_state == rec.states_after
    params = {id(p) for g in opt.param_groups for p in g["params"]}
    assert params == {id(p) for p in m.parameters()}
    for p in layer.parameters():
        st_ = opt.state[p]
        assert st_["exp_avg"].shape == p.shape and st_["exp_avg_sq"].shape == p.shape
        assert torch.all(st_["exp_avg_sq"] >= 0)
    assert np.isfinite(_adam_step(m, opt, idx))


def _mode_norms(layer):
    """Per mode: ||stored B row|| and ||C column||."""
    with torch.no_grad():
        b = torch.hypot(layer.B_re, layer.B_im).pow(2).sum(1).sqrt().numpy()
        c = torch.hypot(layer.C_re, layer.C_im).pow(2).sum(0).sqrt().numpy()
    return b, c


@settings(max_examples=10, deadline=None)
@given(H=st.integers(1, 3), N=st.integers(3, 6), seed=st.integers(0, 2**10), cut=st.integers(1, 3))
def test_mode_scale_layer_keeps_the_map_and_takes_the_layers_ratio(H, N, seed, cut):
    """``mode_scale="layer"`` is a diagonal similarity: the same outputs, HSVs and bound as the
    eigenvector scaling, and every new mode has the trained layer's median ||C_i|| / ||B_i||."""
    u = torch.randn(2, 80, H, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    b0, c0 = _mode_norms(_lru(H, N, seed))
    rho = np.median(c0 / b0)
    out, recs = {}, {}
    for scale in ("eig", "layer"):
        layer = _lru(H, N, seed)
        try:
            recs[scale] = balanced_surgery(layer, None, rank=2 * N - cut, mode_scale=scale)
        except InvalidArgumentError:  # a rank that splits a repeated HSV: refused for both scalings
            return
        with torch.no_grad():
            out[scale] = layer(u)
        if scale == "layer":
            b, c = _mode_norms(layer)
            assert np.allclose(c / b, rho, rtol=1e-6)
    # the scan accumulates in float32 (differences at 1e-7 relative); the map itself is checked in float64 below
    assert torch.allclose(out["eig"], out["layer"], atol=1e-6 * (1 + out["eig"].abs().max().item()))
    assert recs["eig"].hsv == pytest.approx(recs["layer"].hsv) and recs["eig"].bound == pytest.approx(recs["layer"].bound)
    assert recs["layer"].error <= recs["layer"].bound * (1 + 1e-6) + 1e-9


def test_mode_scale_is_checked():
    with pytest.raises(InvalidArgumentError, match="mode_scale"):
        balanced_surgery(_lru(2, 3, 0), None, rank=4, mode_scale="unit")


@pytest.mark.parametrize("scale", ["eig", "layer"])
def test_first_moment_map_is_the_gradient_map(scale):
    """At full rank the mapped gradient of B and C equals autograd's gradient of the new layer
    (the derivation in lyactl_torch.ssm.truncate), for either scaling of the new modes."""
    from lyactl_torch.ssm.truncate import _mapped_moments, _mode_scale

    layer = _lru(2, 4, 5)
    u = torch.randn(2, 30, 2, dtype=torch.float64)
    w = torch.randn(2, 30, 2, dtype=torch.float64)

    def grads(lay):
        lay.zero_grad()
        (lay(u) * w).sum().backward()
        return {n: (p.grad.double().numpy(), np.zeros_like(p.grad.double().numpy())) for n, p in lay.named_parameters()}

    g_old = grads(layer)
    lam, B, C, _ = layer.system()
    tr = lru_truncation(lam, B, C, rank=8)
    gamma = np.sqrt(1 - np.abs(tr.A) ** 2)
    s = _mode_scale(layer, tr.B, tr.C, gamma) if scale == "layer" else np.ones(len(tr.A))
    mapped = _mapped_moments(g_old, layer, tr.T[:4] / s, s[:, None] * tr.Tinv[:, :4], s[:, None] * tr.B, gamma)
    balanced_surgery(layer, None, rank=8, mode_scale=scale, engine="numpy")
    g_new = grads(layer)
    for name in ("B_re", "B_im", "C_re", "C_im", "gamma_log"):
        assert np.allclose(mapped[name][0].numpy(), g_new[name][0], atol=1e-6 * (1 + np.abs(g_new[name][0]).max())), name


def test_select_modes_refuses_bad_keep():
    layer = _lru(2, 4, 0)
    with pytest.raises(InvalidArgumentError, match="keep"):
        select_modes(layer, None, [7], rule="x")
    with pytest.raises(InvalidArgumentError, match="r"):
        keep_top(np.ones(3), 0)


@pytest.mark.parametrize("reset", [False, True])
def test_select_modes_slices_or_resets_the_adam_state(reset):
    m, opt, idx = _trained_lm()
    layer = m.ssm_layers()[0]
    before = {n: {k: v.clone() for k, v in opt.state[p].items()} for n, p in layer.named_parameters()}
    keep = [0, 2, 5]
    rec = select_modes(layer, opt, keep, rule="x", reset_optimizer=reset)
    assert rec.policy == ("reset" if reset else "slice-exact")
    for n, p in layer.named_parameters():
        st_, old = opt.state[p], before[n]
        if n == "D":  # not a state parameter: untouched either way
            assert torch.equal(st_["exp_avg"], old["exp_avg"])
            continue
        ax = 1 if n.startswith("C") else 0
        want = [torch.zeros_like(st_[k]) if reset else old[k].index_select(ax, torch.tensor(keep))
                for k in ("exp_avg", "exp_avg_sq")]
        assert torch.equal(st_["exp_avg"], want[0]) and torch.equal(st_["exp_avg_sq"], want[1]), n
        assert float(st_["step"]) == (0.0 if reset else float(old["step"])), n
    assert np.isfinite(_adam_step(m, opt, idx))


@settings(max_examples=15, deadline=None)
@given(N=st.integers(2, 12), seed=st.integers(0, 2**10), T=st.integers(1, 400))
def test_horizon_scores_are_time_limited_hsv_proxies(N, seed, T):
    """``sqrt(P_ii(T) Q_ii(T))`` from the finite sums, below the infinite-horizon proxy, at most
    ``T |C_i||B_i|``, increasing in T, equal to the proxy in the limit."""
    from lyactl_torch.ssm.truncate import horizon_scores

    layer = _lru(2, N, seed, r_min=0.5, r_max=0.999)
    lam, B, C, _ = layer.system()
    k = np.arange(T)[:, None]
    direct = np.linalg.norm(C, axis=0) * np.linalg.norm(B, axis=1) * (np.abs(lam)[None] ** (2 * k)).sum(0)
    s = horizon_scores(T)(layer)
    assert np.allclose(s, direct, rtol=1e-9)
    inf = hsv_proxy_scores(layer)
    assert np.all(s <= inf * (1 + 1e-12)) and np.all(s <= T * np.linalg.norm(C, axis=0) * np.linalg.norm(B, axis=1) * (1 + 1e-12))
    assert np.all(horizon_scores(T + 1)(layer) >= s)
    assert np.allclose(horizon_scores(10**7)(layer), inf, rtol=1e-6)


def test_horizon_scores_refuse_a_bad_horizon():
    from lyactl_torch.ssm.truncate import horizon_scores

    with pytest.raises(InvalidArgumentError, match="T"):
        horizon_scores(0)
