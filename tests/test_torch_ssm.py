"""SSM layers of the torch backend: the scan, the LRU against a numpy simulation, the LM
(FLOPs count, compile), all on CPU at tiny sizes."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from hypothesis import given, settings, strategies as st  # noqa: E402

from lyactl.errors import InvalidArgumentError, ShapeError  # noqa: E402
from lyactl_torch.ssm.lm import SSMLM, SSMLMConfig, flops_per_token, state_share  # noqa: E402
from lyactl_torch.ssm.lru import LRU, LRUConfig  # noqa: E402
from lyactl_torch.ssm.s4d import S4DReal, S4DRealConfig  # noqa: E402
from lyactl_torch.ssm.scan import (chunked_scan, chunked_scan_real, chunked_scan_real_state_major,  # noqa: E402
                                   chunked_scan_state_major, naive_scan)


@settings(max_examples=25, deadline=None)
@given(B=st.integers(1, 3), T=st.integers(1, 150), N=st.integers(1, 6), chunk=st.integers(2, 40),
       gap=st.floats(1e-4, 0.5), seed=st.integers(0, 2**16))
def test_chunked_scan_matches_the_loop(B, T, N, chunk, gap, seed):
    """Float32 chunked scan == float64 loop, relative to the state's size, for |lam| up to 1 - 1e-4."""
    g = torch.Generator().manual_seed(seed)
    r = 1 - gap * torch.rand(N, generator=g, dtype=torch.float64)
    w = 2 * math.pi * torch.rand(N, generator=g, dtype=torch.float64)
    b = torch.randn(B, T, N, generator=g, dtype=torch.complex128)
    ref = naive_scan(torch.polar(r, w), b)
    x_re, x_im = chunked_scan(torch.log(r).float(), w.float(), b.real.float(), b.imag.float(), chunk)
    err = (torch.complex(x_re, x_im).to(torch.complex128) - ref).abs().max()
    assert err <= 1e-4 * (1 + ref.abs().max())
    s_re, s_im = chunked_scan_state_major(torch.log(r).float(), w.float(), b.real.float().permute(2, 0, 1).contiguous(),
                                          b.imag.float().permute(2, 0, 1).contiguous(), chunk)
    err = (torch.complex(s_re, s_im).permute(1, 2, 0).to(torch.complex128) - ref).abs().max()
    assert err <= 1e-4 * (1 + ref.abs().max())
    xr = chunked_scan_real(torch.log(r).float(), b.real.float(), chunk)
    ref_r = naive_scan(r.to(torch.complex128), b.real.to(torch.complex128)).real
    assert (xr.double() - ref_r).abs().max() <= 1e-4 * (1 + ref_r.abs().max())
    xs = chunked_scan_real_state_major(torch.log(r).float(), b.real.float().permute(2, 0, 1).contiguous(), chunk)
    assert (xs.permute(1, 2, 0).double() - ref_r).abs().max() <= 1e-4 * (1 + ref_r.abs().max())


def test_scan_refuses_bad_arguments():
    z = torch.zeros(2, 5, 3)
    with pytest.raises(InvalidArgumentError, match="chunk"):
        chunked_scan(torch.zeros(3), torch.zeros(3), z, z, chunk=1)
    with pytest.raises(ShapeError, match="b_re"):
        chunked_scan(torch.zeros(4), torch.zeros(4), z, z)
    with pytest.raises(ShapeError, match="b_re"):
        chunked_scan_state_major(torch.zeros(3), torch.zeros(3), z, z)
    with pytest.raises(InvalidArgumentError, match="chunk"):
        chunked_scan_state_major(torch.zeros(2), torch.zeros(2), z, z, chunk=1)


def _simulate(lam, B, C, D, u):
    """numpy reference of y = Re(C x) + D u, x[t] = lam x[t-1] + B u[t] (complex128)."""
    x = np.zeros((u.shape[0], len(lam)), complex)
    ys = []
    for t in range(u.shape[1]):
        x = lam * x + u[:, t] @ B.T
        ys.append((x @ C.T).real + u[:, t] @ D.T)
    return np.stack(ys, axis=1)


@pytest.mark.parametrize("layer", [LRU(LRUConfig(5, 7, chunk=8), torch.Generator().manual_seed(0)),
                                   S4DReal(S4DRealConfig(5, 7, chunk=8), torch.Generator().manual_seed(0))])
def test_layer_output_is_the_simulated_system(layer):
    u = torch.randn(2, 37, 5, generator=torch.Generator().manual_seed(1))
    y = layer(u).double().detach().numpy()
    ref = _simulate(*layer.system(), u.double().numpy())
    assert np.abs(y - ref).max() <= 1e-4 * (1 + np.abs(ref).max())


def test_lru_init_ring_and_normalisation():
    layer = LRU(LRUConfig(8, 4000), torch.Generator().manual_seed(0))
    lam, B, C, D = layer.system()
    assert np.all((np.abs(lam) >= 0.9 - 1e-9) & (np.abs(lam) <= 0.999 + 1e-9))
    # gamma = sqrt(1 - |lam|^2): the stationary state variance per unit input is |B/gamma|^2 scale
    g = np.exp(layer.gamma_log.detach().double().numpy())
    assert np.allclose(g**2, 1 - np.abs(lam) ** 2, rtol=1e-5)


def test_flops_count_and_state_share():
    cfg = SSMLMConfig(vocab_size=100, d_model=16, n_layer=2, n_state=64, chunk=8, attn_every=2)
    m = SSMLM(cfg, seed=0)
    f = flops_per_token(m, 32)
    H, N, L = 16, 64, 8
    assert f["ssm_proj"] == 2 * 8 * N * H and f["ssm_scan"] == 2 * (8 * L + 16) * N
    assert f["train"] == 3 * f["forward"]
    assert 0 < state_share(m, 32) < 1
    # the count follows the layers' current sizes
    from lyactl_torch.ssm.truncate import keep_top, magnitude_scores, select_modes
    layer = m.ssm_layers()[0]
    select_modes(layer, None, keep_top(magnitude_scores(layer), 16), rule="magnitude")
    assert flops_per_token(m, 32)["ssm_proj"] == 8 * (64 + 16) * H


def test_lm_forward_backward_and_hybrid_blocks():
    cfg = SSMLMConfig(vocab_size=50, d_model=16, n_layer=2, n_state=8, chunk=4, attn_every=1, n_head=2)
    m = SSMLM(cfg, seed=0)
    assert len(m.blocks) == 4 and m.states() == [8, 8]
    idx = torch.randint(0, 50, (2, 11))
    logits = m(idx)
    assert logits.shape == (2, 11, 50)
    logits.logsumexp(-1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


def test_lm_is_causal():
    m = SSMLM(SSMLMConfig(vocab_size=30, d_model=8, n_layer=2, n_state=6, chunk=4), seed=0)
    idx = torch.randint(0, 30, (1, 12))
    idx2 = idx.clone()
    idx2[0, 7:] = (idx2[0, 7:] + 1) % 30
    with torch.no_grad():
        assert torch.allclose(m(idx)[0, :7], m(idx2)[0, :7], atol=1e-6)
        assert not torch.allclose(m(idx)[0, 7:], m(idx2)[0, 7:])


def test_lm_compiles():
    """Dynamo captures forward and backward in one graph each (no graph break); the "aot_eager"
    backend skips the C++ code generation that makes inductor take ~40 s on CPU (the GPU
    benchmark compiles with inductor)."""
    m = SSMLM(SSMLMConfig(vocab_size=30, d_model=8, n_layer=1, n_state=6, chunk=4), seed=0)
    idx = torch.randint(0, 30, (2, 16))
    ref = m(idx)
    explained = torch._dynamo.explain(m)(idx)
    assert explained.graph_break_count == 0
    out = torch.compile(m, backend="aot_eager")(idx)
    assert torch.allclose(out, ref, atol=1e-5)
    out.sum().backward()


@settings(max_examples=10, deadline=None)
@given(Bt=st.integers(1, 3), T=st.integers(1, 70), N=st.integers(1, 5), H=st.integers(1, 4), seed=st.integers(0, 2**10))
@pytest.mark.parametrize("kind", ["lru", "s4d"])
def test_state_major_layout_is_the_same_layer(kind, Bt, T, N, H, seed):
    """layout="state" == layout="time" with the same parameters: outputs and gradients."""
    g = torch.Generator().manual_seed(seed)
    make = (lambda lay, gen: LRU(LRUConfig(H, N, chunk=8, layout=lay), gen)) if kind == "lru" else (
        lambda lay, gen: S4DReal(S4DRealConfig(H, N, chunk=8, layout=lay), gen))
    a = make("time", g).double()
    b = make("state", torch.Generator()).double()
    b.load_state_dict(a.state_dict())
    u = torch.randn(Bt, T, H, generator=g, dtype=torch.float64)
    ya, yb = a(u), b(u)
    assert torch.allclose(ya, yb, rtol=1e-5, atol=1e-6 * (1 + float(ya.detach().abs().max())))
    ya.square().sum().backward()
    yb.square().sum().backward()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(pa.grad, pb.grad, rtol=1e-4, atol=1e-6 * (1 + float(pa.grad.abs().max()))), n


def test_layout_is_validated():
    with pytest.raises(InvalidArgumentError, match="layout"):
        LRUConfig(4, 4, layout="spiral")
    with pytest.raises(InvalidArgumentError, match="layout"):
        S4DRealConfig(4, 4, layout="spiral")
