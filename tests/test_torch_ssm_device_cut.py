"""The device engine of LRU state truncation (lyactl_torch.ssm.balance_torch, .hinf_torch) against
the torch-free core: closed-form Gramians solve their Lyapunov equations and equal the core's up
to the state order; HSVs, bound and reduced transfer function equal the core's up to float64
round-off; the measured error stays within the bound; a surgery by the device engine re-verifies
with the core; refusals are the core's."""

from __future__ import annotations

import contextlib
import functools
import math
from unittest import mock

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from hypothesis import given, settings, strategies as st  # noqa: E402

from lyactl.analysis.balanced import frequency_response, hinf_error, lru_truncation  # noqa: E402
from lyactl.analysis.gramians import NonFiniteSystemError, real_output_gramians, real_output_realisation  # noqa: E402
from lyactl.errors import InvalidArgumentError  # noqa: E402
from lyactl_torch.ssm import balance_torch as bt  # noqa: E402
from lyactl_torch.ssm.hinf_torch import hinf_error as hinf_torch  # noqa: E402
from lyactl_torch.ssm.lru import LRU, LRUConfig  # noqa: E402
from lyactl_torch.ssm.s4d import S4DReal, S4DRealConfig  # noqa: E402
from lyactl_torch.ssm.truncate import balanced_surgery, keep_top, magnitude_scores, select_modes  # noqa: E402
from strategies import stable_diagonal_systems  # noqa: E402

EPS = np.finfo(float).eps
_SINGULAR, _REDIAGONALISE = bt._singular, bt._rediagonalise_on


def _cuda_algorithms(on: bool) -> contextlib.AbstractContextManager:
    """The engine's CUDA choices (Jordan-Wielandt eigh for the SVD, torch.linalg.eig for the
    reduced A), forced on the CPU so that CI runs them too."""
    stack = contextlib.ExitStack()
    if on:
        stack.enter_context(mock.patch.object(bt, "_singular", functools.partial(_SINGULAR, jordan_wielandt=True)))
        stack.enter_context(mock.patch.object(bt, "_rediagonalise_on", functools.partial(_REDIAGONALISE, torch_eig=True)))
    return stack


def _lru(H, N, seed, dtype=torch.float64):
    return LRU(LRUConfig(H, N, r_min=0.5, r_max=0.95, chunk=8), torch.Generator().manual_seed(seed)).to(dtype)


def _t(*xs):
    return tuple(torch.from_numpy(np.asarray(x)) for x in xs)


def _block_order(N):
    """Interleaved (Re x_1, Im x_1, ...) -> block [Re x; Im x] permutation."""
    return np.concatenate([np.arange(0, 2 * N, 2), np.arange(1, 2 * N, 2)])


def _abc(tr):
    return tr.A, tr.B, tr.C


def _floor(lam, B, C):
    """The core's numerical zero of an HSV, n eps sqrt(||P|| ||Q||) (lyactl.analysis.balanced._balance)."""
    P, Q = real_output_gramians(lam, B, C)
    return 2 * len(lam) * EPS * math.sqrt(np.linalg.norm(P, 2) * np.linalg.norm(Q, 2))


@settings(max_examples=40, deadline=None)
@given(stable_diagonal_systems())
def test_gramians_solve_the_real_realisations_lyapunov_equations_and_equal_the_core(sys_):
    lam, B, C = sys_
    P, Q = (G.numpy() for G in bt.real_output_gramians(*_t(lam, B, C)))
    A, Bz, Cz = real_output_realisation(lam, B, C)
    p = _block_order(len(lam))
    A, Bz, Cz = A[np.ix_(p, p)], Bz[p], Cz[:, p]
    scale = np.linalg.norm(P) + np.linalg.norm(Bz) ** 2
    assert np.linalg.norm(A @ P @ A.T + Bz @ Bz.T - P) <= 1e-12 * scale
    scale = np.linalg.norm(Q) + np.linalg.norm(Cz) ** 2
    assert np.linalg.norm(A.T @ Q @ A + Cz.T @ Cz - Q) <= 1e-12 * scale
    Pc, Qc = real_output_gramians(lam, B, C)
    np.testing.assert_allclose(P, Pc[np.ix_(p, p)], rtol=0, atol=1e-13 * np.abs(Pc).max())
    np.testing.assert_allclose(Q, Qc[np.ix_(p, p)], rtol=0, atol=1e-13 * np.abs(Qc).max())


@pytest.mark.parametrize("cuda_algorithms", [False, True])
@settings(max_examples=30, deadline=None)
@given(H=st.integers(1, 3), N=st.integers(2, 6), seed=st.integers(0, 2**10), data=st.data())
def test_device_engine_equals_the_core_up_to_round_off(cuda_algorithms, H, N, seed, data):
    layer = _lru(H, N, seed)
    rank = data.draw(st.integers(1, 2 * N - 1))
    lam, B, C, _ = layer.system()
    outcomes = []
    engines = (lambda: lru_truncation(lam, B, C, rank=rank),
               lambda: bt.lru_truncation(*bt.diagonal_modes(layer), rank=rank))
    for run in engines:
        try:
            with _cuda_algorithms(cuda_algorithms):
                outcomes.append(run())
        except InvalidArgumentError as exc:
            outcomes.append(str(exc))
    core, dev = outcomes
    assert isinstance(core, str) == isinstance(dev, str)  # the same ranks refused
    if isinstance(core, str):
        assert "rank" in core and "rank" in dev
        return
    floor = _floor(lam, B, C)  # HSVs: 1e-8 relative above the core's numerical zero
    assert np.all(np.abs(dev.hsv - core.hsv) <= 1e-8 * core.hsv + floor)
    assert abs(dev.bound - core.bound) <= 1e-8 * core.bound + 2 * (2 * N - rank) * floor
    assert dev.rank == core.rank and len(dev.A) == len(core.A)
    w = np.linspace(0, math.pi, 64)
    G, Gc, Gd = (frequency_response(*s, w=w, real_output=True) for s in ((lam, B, C), _abc(core), _abc(dev)))
    assert np.abs(Gd - Gc).max() <= 1e-8 * np.abs(G).max()
    x_cc = np.vstack([B, B.conj()])  # the maps act on [x; conj x]: B_r = Tinv B_cc, C_r = C_cc T
    assert np.allclose(dev.Tinv @ x_cc, dev.B, atol=1e-10 * np.abs(B).max())
    assert np.allclose(np.hstack([C, C.conj()]) @ dev.T, dev.C, atol=1e-10 * np.abs(C).max())
    err = hinf_torch((lam, B, C), _abc(dev), n_freq=256)
    assert err <= dev.bound * (1 + 1e-9) + 1e-12


@settings(max_examples=8, deadline=None)
@given(H=st.integers(1, 3), N=st.integers(2, 5), seed=st.integers(0, 2**10),
       policy=st.sampled_from(["reset", "approx"]))
def test_a_device_surgery_reverifies_with_the_core(H, N, seed, policy):
    layer = _lru(H, N, seed, torch.float32)  # float32 storage, as in training
    opt = torch.optim.AdamW(layer.parameters(), lr=1e-3)
    for p in layer.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    lam, B, C, D = layer.system()
    try:
        rec = balanced_surgery(layer, opt, rank=2 * N - 2, policy=policy)
    except InvalidArgumentError as exc:
        assert "rank" in str(exc)
        return
    core = lru_truncation(lam, B, C, rank=2 * N - 2)  # the offline check: the core's numbers
    floor = _floor(lam, B, C)
    assert np.all(np.abs(np.array(rec.hsv) - core.hsv) <= 1e-8 * core.hsv + floor)
    assert rec.bound == pytest.approx(2 * math.fsum(rec.discarded), rel=1e-12)
    written = layer.system()
    core_err = hinf_error((lam, B, C, D), written, n_freq=512, real_output=True)
    assert core_err <= rec.bound * (1 + 1e-6) + 1e-9 and rec.certificate()["holds"]
    assert rec.error == pytest.approx(core_err, rel=1e-3)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 12), k=st.integers(0, 6), seed=st.integers(0, 2**10))
def test_jordan_wielandt_singular_values_and_vectors_are_an_svd(n, k, seed):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(n, n, dtype=torch.float64, generator=g) * torch.logspace(0, -6, n, dtype=torch.float64)
    rank = min(k, n)
    s, U, V = _SINGULAR(M, rank, jordan_wielandt=True)
    ref = torch.linalg.svdvals(M)
    assert torch.all((s - ref).abs() <= 10 * n * EPS * ref[0])  # an SVD's absolute accuracy
    assert torch.allclose(M @ V, U * s[:rank], atol=10 * n * EPS * float(ref[0]))
    assert torch.allclose(U.mT @ U, torch.eye(rank, dtype=M.dtype), atol=1e-8)  # kept HSVs are well apart here


def test_device_eig_keeps_the_structure_and_refuses_ill_conditioned_eigenvectors():
    assert bt._exact_pairs(np.array([0.5, 0.3 + 0.1j, 0.3 - 0.1j, -0.2]))
    assert not bt._exact_pairs(np.array([0.3 + 0.1j, 0.3 - 0.1000001j]))
    assert not bt._exact_pairs(np.array([0.5 + 1e-17j, 0.2]))
    A = torch.randn(7, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) / 4
    mu, W, Winv = _REDIAGONALISE(A, 1e8, torch_eig=True)
    assert bt._exact_pairs(mu)
    assert torch.allclose(W @ torch.diag(torch.from_numpy(mu)) @ Winv, A.to(W.dtype), atol=1e-12)
    defective = torch.tensor([[0.5, 1.0], [0.0, 0.5]], dtype=torch.float64)  # a Jordan block
    for torch_eig in (True, False):
        with pytest.raises(InvalidArgumentError, match="rank"):
            _REDIAGONALISE(defective, 1e8, torch_eig=torch_eig)


def test_both_engines_cut_a_layer_alike():
    layers = [_lru(3, 8, 7), _lru(3, 8, 7)]
    recs = [balanced_surgery(lay, None, rank=10, engine=e) for lay, e in zip(layers, ("torch", "numpy"))]
    assert recs[0].states_after == recs[1].states_after and layers[0].n_state == layers[1].n_state
    np.testing.assert_allclose(recs[0].hsv, recs[1].hsv, rtol=1e-8)
    assert recs[0].error == pytest.approx(recs[1].error, rel=1e-6)
    u = torch.randn(2, 50, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y0, y1 = layers[0](u), layers[1](u)
    assert torch.allclose(y0, y1, atol=1e-8 * float(y1.abs().max()))
    with pytest.raises(InvalidArgumentError, match="engine"):
        balanced_surgery(_lru(2, 3, 0), None, rank=4, engine="jax")


def test_modes_are_the_layers_system_and_select_modes_measures_on_them():
    for layer in (_lru(3, 5, 1, torch.float32), S4DReal(S4DRealConfig(3, 5), torch.Generator().manual_seed(1))):
        ref = layer.system()[:3]
        for x, y in zip(bt.diagonal_modes(layer), ref):
            assert not x.requires_grad
            np.testing.assert_array_equal(x.numpy(), y)  # the same numbers, not just close
        full = tuple(np.copy(x) for x in ref) + (layer.system()[3],)
        rec = select_modes(layer, None, keep_top(magnitude_scores(layer), 2), rule="magnitude")
        core = hinf_error(full, layer.system(), n_freq=512, real_output=isinstance(layer, LRU))
        assert rec.error == pytest.approx(core, rel=1e-3) and rec.certificate()["holds"]


def test_refusals_are_the_cores():
    lam, B, C = _t(np.array([0.5 + 0.1j, 0.3j]), np.ones((2, 2), complex), np.ones((2, 2), complex))
    with pytest.raises(NonFiniteSystemError, match="B"):
        bt.lru_truncation(lam, B * math.nan, C, rank=2)
    with pytest.raises(InvalidArgumentError, match="A"):
        bt.hankel_singular_values(lam * 3, B, C)
    with pytest.raises(InvalidArgumentError, match="rank"):
        bt.lru_truncation(lam, B, C, rank=5)
    full = bt.lru_truncation(lam, B, C, rank=4)  # nothing truncated: the system itself
    assert full.bound == 0.0 and np.array_equal(full.A, lam.numpy())
    np.testing.assert_allclose(full.hsv, lru_truncation(*(x.numpy() for x in (lam, B, C)), rank=4).hsv, rtol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_engine_equals_the_cpu_engine():
    layer = _lru(16, 64, 3)
    cpu = bt.lru_truncation(*bt.diagonal_modes(layer), rank=40)
    gpu = bt.lru_truncation(*bt.diagonal_modes(layer.cuda()), rank=40)
    lam, B, C, _ = layer.cpu().system()
    floor = _floor(lam, B, C)
    assert np.all(np.abs(gpu.hsv - cpu.hsv) <= 1e-8 * cpu.hsv + floor)
    w = np.linspace(0, math.pi, 64)
    Gc, Gg = (frequency_response(*_abc(s), w=w, real_output=True) for s in (cpu, gpu))
    assert np.abs(Gg - Gc).max() <= 1e-8 * np.abs(Gc).max() + 1e-8 * cpu.bound
    full = bt.diagonal_modes(layer.cuda())
    assert hinf_torch(full, _abc(gpu), 256, "cuda") == pytest.approx(hinf_torch((lam, B, C), _abc(cpu), 256), rel=1e-6)
