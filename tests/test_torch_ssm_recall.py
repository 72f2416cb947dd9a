"""The recall mixer (a gated MIMO LRU memory) and balanced cuts capped in complex modes."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from hypothesis import given, settings, strategies as st  # noqa: E402

from lyactl.errors import InvalidArgumentError  # noqa: E402
from lyactl_torch.ssm.lm import SSMLM, SSMLMConfig, flops_per_token  # noqa: E402
from lyactl_torch.ssm.lru import LRU  # noqa: E402
from lyactl_torch.ssm.recall import RecallConfig, RecallLRU  # noqa: E402
from lyactl_torch.ssm.truncate import balanced_surgery  # noqa: E402


def _mixer(n_head=2, d_head=2, n_state=4, seed=0, max_phase=0.01):
    cfg = RecallConfig(d_model=6, n_head=n_head, d_head=d_head, n_state=n_state, r_min=0.6, r_max=0.95,
                       max_phase=max_phase, chunk=4)
    return RecallLRU(cfg, torch.Generator().manual_seed(seed)).double()


@settings(max_examples=10, deadline=None)
@given(n_head=st.integers(1, 2), d_head=st.integers(1, 3), n_state=st.integers(1, 12), seed=st.integers(0, 999))
def test_memory_starts_as_a_projection_of_linear_attention(n_head, d_head, n_state, seed):
    """``Re(C gamma B)`` is the orthogonal projection onto ``min(2N, H')`` directions (the identity
    when ``2N >= H'``), and the LRU has no direct path: the memory of one pair is that pair, projected."""
    m = _mixer(n_head, d_head, n_state, seed)
    lam, gB, C, D = m.lru.system()
    P = (C @ gB).real
    H = m.cfg.d_memory
    assert P.shape == (H, H)
    assert abs(P @ P - P).max() < 1e-6 and abs(P - P.T).max() < 1e-6  # orthogonal projection (float32 init)
    assert round(float(P.trace())) == min(2 * n_state, H)
    assert abs(D).max() == 0.0


def test_the_mixer_is_causal():
    """Changing the input at step t changes no output before t."""
    m = _mixer()
    g = torch.Generator().manual_seed(1)
    u = torch.randn(2, 12, 6, generator=g, dtype=torch.float64)
    v = u.clone()
    v[:, 7] += torch.randn(2, 6, generator=g, dtype=torch.float64)
    with torch.no_grad():
        a, b = m(u), m(v)
    assert torch.allclose(a[:, :7], b[:, :7], atol=1e-12) and not torch.allclose(a[:, 7:], b[:, 7:])


def test_the_language_model_exposes_the_inner_lru_and_counts_its_flops():
    cfg = SSMLMConfig(vocab_size=16, d_model=8, n_layer=2, n_state=6, mlp_hidden=16, chunk=4, kind="recall",
                      n_head=2, d_head=2)
    model = SSMLM(cfg, seed=0)
    layers = model.ssm_layers()
    assert len(layers) == 2 and all(isinstance(x, LRU) for x in layers) and model.states() == [6, 6]
    f = flops_per_token(model, 8)
    H_mem = 2 * 2**2
    assert f["ssm_proj"] == pytest.approx(2 * 8.0 * 6 * H_mem)
    assert f["gates"] == pytest.approx(2 * (8.0 * 8 * 2 * 2 + 4.0 * H_mem))
    assert model(torch.zeros(1, 8, dtype=torch.long)).shape == (1, 8, 16)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 999), cap=st.integers(1, 4))
def test_a_mode_cap_holds_and_the_certificate_still_bounds_the_error(seed, cap):
    """Small phases make the reduced system's eigenvalues real (a whole mode per real state): with
    ``max_modes`` the cut keeps at most that many modes, its rank is what it reports, and the
    measured error stays within the bound of the rank it used."""
    lru = _mixer(n_state=6, seed=seed).lru
    try:
        rec = balanced_surgery(lru, None, rank=2 * cap, max_modes=cap)
    except InvalidArgumentError as exc:  # a rank that splits a repeated HSV
        assert "rank" in str(exc)
        return
    assert lru.n_state <= cap
    rank = len(rec.hsv) - len(rec.discarded)
    assert rank <= 2 * cap and rec.bound == pytest.approx(2 * sum(rec.hsv[rank:]))
    assert rec.error <= rec.bound * (1 + 1e-6) + 1e-9


def test_a_cap_is_checked():
    with pytest.raises(InvalidArgumentError, match="max_modes"):
        balanced_surgery(_mixer().lru, None, rank=4, max_modes=0)


def test_a_bad_shape_is_named():
    with pytest.raises(InvalidArgumentError, match="n_head"):
        RecallConfig(d_model=4, n_head=0, d_head=2, n_state=3)


def test_recall_default_r_min_lives_in_the_config():
    """A user building the config directly gets the memory's long-lived default, not the LRU's."""
    assert SSMLMConfig(64, 16, 1, 8, kind="recall").r_min == 0.99
    assert SSMLMConfig(64, 16, 1, 8, kind="lru").r_min == 0.9
    assert SSMLMConfig(64, 16, 1, 8, kind="recall", r_min=0.95).r_min == 0.95
