"""In-place state truncation of trained SSM layers, with the Adam state carried over.

Two kinds of surgery, each returning a :class:`Surgery` record that is a certificate:

* :func:`balanced_surgery` (LRU): Hankel singular values of the layer's REAL-output system
  (2N real states), square-root balanced truncation to ``rank`` real states, re-diagonalised
  and mapped back to LRU modes (:func:`lyactl.analysis.balanced.lru_truncation`); bound
  ``2 * sum(discarded HSVs)`` on ``||G - G_r||_inf``.
* :func:`select_modes` (LRU or S4D-real): keep a subset ``S`` of the diagonal modes in their
  trained parameterisation (no change of basis; parameters and Adam moments sliced exactly);
  bound ``sum_{i not in S} ||C_i|| ||gamma_i B_i|| / (1 - |lam_i|)`` (each dropped mode's
  transfer function ``z c_i b_i^T / (z - lam_i)`` has H-infinity norm at most that, also for
  the real part of a complex mode; triangle inequality).

Both measure the realised error on a frequency grid from the parameters actually written
(float32 storage, the phase clamp below), so ``error <= bound`` is checked, not assumed.

Adam state under the change of basis (derivation). :func:`lru_truncation` returns ``T``
(2N x N_r) and ``Tinv`` (N_r x 2N) acting on ``[x; conj x]``; write ``T1 = T[:N]`` and
``Tinv1 = Tinv[:, :N]``. At full rank the reduced layer is the same map as the old one with
``B = T1 B_r`` and ``C = C_r Tinv1`` (both hold exactly, and the new modes diagonalise
``lam``: ``lam T1 = T1 lam_r``), so the loss as a function of the new parameters is
``L(T1 B_r, C_r Tinv1)``. With PyTorch's complex gradient ``g = dL/dRe + i dL/dIm``, a
complex-linear reparameterisation ``B = M B_r`` gives ``g_{B_r} = M^H g_B``; hence::

    g_{B_r} = T1^H g_B,        g_{C_r} = g_C Tinv1^H

(checked against autograd in tests/test_torch_ssm_surgery.py). Adam's first moment is a
linear average of gradients, so it maps the same way: ``m_{B_r} = T1^H m_B`` (on the effective
``gamma B``; the stored ``B/gamma`` rescales by ``gamma``), ``m_{C_r} = m_C Tinv1^H``, and
``m_{gamma_log} = sum_h Re(conj(m_{B_eff}) B_eff)`` (chain rule through ``B_eff = e^{gamma_log} B``).
Truncation keeps these rows/columns of the balanced system; they are exact for the kept
coordinates of the full balanced model and first-order for the truncated one. No exact map
exists for ``(nu_log, theta_log)``: the new eigenvalues depend on the off-diagonal entries
of the old ``A``, which the diagonal parameterisation has no gradient for; their ``m`` is set
to zero. The second moment ``v = EMA(g^2)`` is not linear in ``g``; three policies:

* ``"reset"``: ``m = v = 0`` and ``step = 0`` for the layer's parameters (a fresh Adam);
* ``"approx"``: ``m`` mapped as above; ``v`` mapped assuming uncorrelated gradient entries,
  ``E[(sum_i M_ji g_i)^2] = sum_i M_ji^2 E[g_i^2]`` (per real coordinate), and for
  ``nu_log, theta_log`` the layer's mean ``v``; ``step`` kept;
* ``"slice"``: CompreSSM's choice, old moments sliced to the new size (a misaligned warm start).

Measured (CPU, an LRU of 48 modes imitating a 12-mode system, cut to 16 real states at step
60 of 200, 4 paired seeds, mean loss of the last 20 steps): reset 0.041 / 0.040 / 0.025 /
0.062, slice 0.055 / 0.060 / 0.038 / 0.074, approx 0.063 / 0.067 / 0.044 / 0.080: the fresh
Adam wins on every seed, so ``"reset"`` is the default.

Cost: Gramians, balancing (two eigh and an SVD of 2N x 2N) on the layer's device in float64
(:mod:`.balance_torch`; ``engine="numpy"``: on the host, the core), the eig of the reduced
``r x r`` system on the host, and the error check on the layer's device (:mod:`.hinf_torch`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import numpy as np
import torch
from torch import nn

from lyactl.analysis.balanced import lru_truncation
from lyactl.errors import InvalidArgumentError, bad_arg
from lyactl_torch.ssm import balance_torch
from lyactl_torch.ssm.hinf_torch import hinf_error
from lyactl_torch.ssm.lru import LRU
from lyactl_torch.ssm.s4d import S4DReal

__all__ = ["Surgery", "ModeScale", "balanced_surgery", "select_modes", "measured_error", "magnitude_scores",
           "hsv_proxy_scores", "horizon_scores", "random_scores", "keep_top", "THETA_MIN"]

THETA_MIN = 1e-12
"""Smallest phase written back: a real reduced eigenvalue (theta = 0) cannot be stored as
``theta_log``; it is clamped, and the measured error includes the perturbation."""

Policy = Literal["approx", "reset", "slice"]
Engine = Literal["torch", "numpy"]


@dataclass(frozen=True)
class Surgery:
    """One layer's truncation: the certificate (``error <= bound``) and what was done."""

    layer: str
    rule: str
    states_before: int
    states_after: int
    kept: tuple[int, ...] | None
    hsv: tuple[float, ...]
    discarded: tuple[float, ...]
    bound: float
    error: float
    bound_kind: str
    policy: str

    def certificate(self) -> dict:
        """JSON-ready record (``holds``: the measured error is within the bound)."""
        return {"kind": "ssm-state-truncation", "layer": self.layer, "rule": self.rule,
                "states_before": self.states_before, "states_after": self.states_after,
                "kept": list(self.kept) if self.kept is not None else None, "hsv": list(self.hsv),
                "hsv_discarded": list(self.discarded), "bound": self.bound, "error": self.error,
                "bound_kind": self.bound_kind, "holds": bool(self.error <= self.bound * (1 + 1e-6) + 1e-9),
                "optimizer_policy": self.policy}


def measured_error(full: tuple, reduced: tuple, n_freq: int = 512, device: str | torch.device = "cpu") -> float:
    """``max_w ||G(e^{iw}) - G_r(e^{iw})||_2`` sampled on ``[0, pi]`` (``n_freq`` points plus the
    pole angles, power-iteration lower bounds there, exact SVD norms at the 32 highest points,
    then the best point refined 3 times) for diagonal real-output layers ``(lam, B, C[, D])``
    given as numpy arrays or tensors: a lower bound of the H-infinity norm, like
    :func:`lyactl.analysis.balanced.hinf_error`, computed on ``device`` by
    :func:`lyactl_torch.ssm.hinf_torch.hinf_error` (the evaluation and its cost are there).
    """
    return hinf_error(full, reduced, n_freq, device)


_AXES = {"nu_log": 0, "theta_log": 0, "gamma_log": 0, "B_re": 0, "B_im": 0, "B": 0, "C_re": 1, "C_im": 1, "C": 1}


def _swap(layer: nn.Module, values: dict[str, torch.Tensor], opt: torch.optim.Optimizer | None,
          moments: dict[str, tuple[torch.Tensor, torch.Tensor]], reset: bool) -> None:
    """Replace ``layer.<name>`` by new (smaller) Parameters; move the optimizer's entries.

    ``moments[name] = (exp_avg, exp_avg_sq)`` for the new tensor (missing: zeros);
    ``reset`` also zeroes the step count (Adam's bias correction restarts).
    """
    for name, val in values.items():
        old = getattr(layer, name)
        new = nn.Parameter(val.detach().to(old.device, old.dtype), requires_grad=old.requires_grad)
        setattr(layer, name, new)
        if opt is None:
            continue
        for group in opt.param_groups:
            group["params"] = [new if p is old else p for p in group["params"]]
        st = opt.state.pop(old, None)
        if not st:
            continue
        if "max_exp_avg_sq" in st:
            raise InvalidArgumentError(bad_arg("opt", "Adam/AdamW without amsgrad", "amsgrad=True"))
        m, v = moments.get(name, (torch.zeros_like(new), torch.zeros_like(new)))
        step = torch.zeros_like(st["step"]) if reset else st["step"]
        opt.state[new] = {"step": step, "exp_avg": m.to(new).contiguous(), "exp_avg_sq": v.to(new).contiguous()}


def _moments(layer: nn.Module, opt: torch.optim.Optimizer | None) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """``{name: (m, v)}`` as float64 numpy, or None when the optimizer has no state yet."""
    if opt is None:
        return None
    out = {}
    for name in [n for n in _AXES if hasattr(layer, n)]:
        st = opt.state.get(getattr(layer, name))
        if not st:
            return None
        out[name] = (st["exp_avg"].double().cpu().numpy(), st["exp_avg_sq"].double().cpu().numpy())
    return out


def _slice_moments(mom: dict, idx: np.ndarray) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Moments restricted to the state indices ``idx`` (padded with zeros past the old size)."""
    out = {}
    for name, (m, v) in mom.items():
        ax, n = _AXES[name], m.shape[_AXES[name]]
        ok = idx[idx < n]
        pad = [(0, 0)] * m.ndim
        pad[ax] = (0, len(idx) - len(ok))
        out[name] = tuple(torch.from_numpy(np.pad(np.take(x, ok, axis=ax), pad)) for x in (m, v))
    return out


def _mapped_moments(mom: dict, layer: LRU, T1: np.ndarray, Tinv1: np.ndarray, B_r: np.ndarray,
                    gamma_new: np.ndarray) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The ``"approx"`` policy of the module docstring: m exactly mapped, v under independence."""
    g_old = np.exp(layer.gamma_log.detach().double().cpu().numpy())[:, None]
    mB = (mom["B_re"][0] + 1j * mom["B_im"][0]) / g_old
    vB_re, vB_im = mom["B_re"][1] / g_old**2, mom["B_im"][1] / g_old**2
    M = T1.conj().T  # [N_r, N]
    mBr = M @ mB
    vBr_re = M.real**2 @ vB_re + M.imag**2 @ vB_im
    vBr_im = M.imag**2 @ vB_re + M.real**2 @ vB_im
    K = Tinv1.conj().T  # [N, N_r]
    mCr = (mom["C_re"][0] + 1j * mom["C_im"][0]) @ K
    vCr_re = mom["C_re"][1] @ K.real**2 + mom["C_im"][1] @ K.imag**2
    vCr_im = mom["C_re"][1] @ K.imag**2 + mom["C_im"][1] @ K.real**2
    g = gamma_new[:, None]
    m_gamma = np.sum((mBr.conj() * B_r).real, axis=1)
    v_gamma = np.sum(B_r.real**2 * vBr_re + B_r.imag**2 * vBr_im, axis=1)
    n_r = len(gamma_new)
    out = {"B_re": (g * mBr.real, g**2 * vBr_re), "B_im": (g * mBr.imag, g**2 * vBr_im),
           "C_re": (mCr.real, vCr_re), "C_im": (mCr.imag, vCr_im), "gamma_log": (m_gamma, v_gamma)}
    for name in ("nu_log", "theta_log"):
        out[name] = (np.zeros(n_r), np.full(n_r, mom[name][1].mean()))
    return {k: (torch.from_numpy(np.ascontiguousarray(m)), torch.from_numpy(np.ascontiguousarray(v))) for k, (m, v) in out.items()}


def _lru_values(lam: np.ndarray, B: np.ndarray, C: np.ndarray) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """LRU parameters holding modes ``(lam, B_eff, C)`` (phase clamped at THETA_MIN), and gamma."""
    mag = np.abs(lam)
    theta = np.maximum(np.mod(np.angle(lam), 2 * math.pi), THETA_MIN)
    gamma = np.sqrt(1.0 - mag**2)
    vals = {"nu_log": np.log(-np.log(mag)), "theta_log": np.log(theta), "gamma_log": np.log(gamma),
            "B_re": (B / gamma[:, None]).real, "B_im": (B / gamma[:, None]).imag, "C_re": C.real, "C_im": C.imag}
    return {k: torch.from_numpy(np.array(v)) for k, v in vals.items()}, gamma


def _mode_scale(layer: LRU, B_r: np.ndarray, C_r: np.ndarray, gamma_r: np.ndarray) -> np.ndarray:
    """Per-mode factors ``s`` of a diagonal similarity ``x_r -> diag(s) x_r`` (``B_r -> s B_r``,
    ``C_r -> C_r / s``: the transfer function, HSVs, bound and error unchanged) that give every
    new mode the trained layer's ratio ``rho = median_i ||C_i|| / ||B_i/gamma_i||`` between its
    stored output and input weights: ``s_i^2 = ||C_r,i|| / (rho ||B_r,i / gamma_i||)``.
    An eigenvector basis fixes each mode only up to such a scale; Adam moves every stored entry
    by about ``lr`` per step, so the scale sets how fast each side of a mode trains."""
    with torch.no_grad():
        Bp = torch.hypot(layer.B_re.double(), layer.B_im.double()).pow(2).sum(1).sqrt().cpu().numpy()
        Cn = torch.hypot(layer.C_re.double(), layer.C_im.double()).pow(2).sum(0).sqrt().cpu().numpy()
    rho = float(np.median(Cn / np.maximum(Bp, 1e-300)))
    b = np.linalg.norm(B_r / gamma_r[:, None], axis=1)
    c = np.linalg.norm(C_r, axis=0)
    ok = (b > 0) & (c > 0) & np.isfinite(b) & np.isfinite(c) & (rho > 0)
    return np.where(ok, np.sqrt(np.where(ok, c, 1.0) / (rho * np.where(ok, b, 1.0))), 1.0)


ModeScale = Literal["eig", "layer"]


def balanced_surgery(layer: LRU, opt: torch.optim.Optimizer | None, *, rank: int, policy: Policy = "reset",
                     name: str = "", n_freq: int = 512, engine: Engine = "torch",
                     mode_scale: ModeScale = "eig", max_modes: int | None = None) -> Surgery:
    """Replace ``layer``'s modes by the balanced truncation to ``rank`` REAL states of its
    real-output system; move Adam's state by ``policy`` (module docstring). In place.

    ``max_modes``: at most this many complex modes after the cut. A real eigenvalue of the
    reduced system spends a whole complex mode on one real state, so ``rank`` real states can
    need up to ``rank`` modes; the rank then steps down (by the excess each time, one balancing
    per try) until the modes fit. The first rank found that fits, not necessarily the largest.

    ``engine``: ``"torch"`` balances on the layer's device in float64
    (:func:`lyactl_torch.ssm.balance_torch.lru_truncation`); ``"numpy"`` on the host with the
    torch-free core (:func:`lyactl.analysis.balanced.lru_truncation`). Both give the same HSVs,
    bound and reduced transfer function up to float64 round-off; the error is measured on the
    layer's device either way (:func:`measured_error`).

    ``mode_scale``: ``"eig"`` keeps the eigenvector scaling the balancing returns; ``"layer"``
    rescales each new mode to the trained layer's input/output weight ratio (:func:`_mode_scale`).
    """
    if mode_scale not in ("eig", "layer"):
        raise InvalidArgumentError(bad_arg("mode_scale", "'eig' or 'layer'", mode_scale))
    if policy not in ("approx", "reset", "slice"):
        raise InvalidArgumentError(bad_arg("policy", "'approx', 'reset' or 'slice'", policy))
    if engine not in ("torch", "numpy"):
        raise InvalidArgumentError(bad_arg("engine", "'torch' or 'numpy'", engine))
    if max_modes is not None and max_modes < 1:
        raise InvalidArgumentError(bad_arg("max_modes", "None or an int >= 1", max_modes))
    mom = _moments(layer, opt)
    full = balance_torch.diagonal_modes(layer) if engine == "torch" else layer.system()[:3]
    truncate = balance_torch.lru_truncation if engine == "torch" else lru_truncation
    tr = truncate(*full, rank=rank)
    while max_modes is not None and len(tr.A) > max_modes:
        if rank == 1:
            raise InvalidArgumentError(bad_arg("max_modes", "a count one real state can meet", max_modes))
        rank = max(1, rank - (len(tr.A) - max_modes))
        tr = truncate(*full, rank=rank)
    N, n_r = layer.n_state, len(tr.A)
    B_r, C_r, T, Tinv = tr.B, tr.C, tr.T, tr.Tinv
    if mode_scale == "layer":
        s = _mode_scale(layer, B_r, C_r, np.sqrt(1.0 - np.abs(tr.A) ** 2))
        B_r, C_r, T, Tinv = s[:, None] * B_r, C_r / s, T / s, s[:, None] * Tinv
    vals, gamma = _lru_values(tr.A, B_r, C_r)
    moments: dict = {}
    if mom is not None and policy == "approx":
        moments = _mapped_moments(mom, layer, T[:N], Tinv[:, :N], B_r, gamma)
    elif mom is not None and policy == "slice":
        moments = _slice_moments(mom, np.arange(n_r))
    _swap(layer, vals, opt, moments, reset=policy == "reset")
    written = balance_torch.diagonal_modes(layer) if engine == "torch" else layer.system()[:3]
    error = measured_error(full, written, n_freq, layer.nu_log.device)
    hsv = tuple(float(s) for s in tr.hsv)
    return Surgery(name, "balanced", N, n_r, None, hsv, hsv[rank:], float(tr.bound), error, "2*sum(hsv_discarded)", policy)


def _modal_terms(lam: np.ndarray, B: np.ndarray, C: np.ndarray) -> np.ndarray:
    """``||C_i|| ||B_i|| / (1 - |lam_i|)``: each mode's H-infinity norm bound."""
    return np.linalg.norm(C, axis=0) * np.linalg.norm(B, axis=1) / (1.0 - np.abs(lam))


def magnitude_scores(layer: nn.Module) -> np.ndarray:
    """Per mode ``|C_i| |B_i| / (1 - |lam_i|)`` (the modal bound's terms)."""
    return _modal_terms(*layer.system()[:3])


def hsv_proxy_scores(layer: nn.Module) -> np.ndarray:
    """Per mode ``sqrt(P_ii Q_ii) = |C_i| |B_i| / (1 - |lam_i|^2)``: the HSV of the mode alone."""
    lam, B, C, _ = layer.system()
    return np.linalg.norm(C, axis=0) * np.linalg.norm(B, axis=1) / (1.0 - np.abs(lam) ** 2)


def horizon_scores(T: int) -> Callable[[nn.Module], np.ndarray]:
    """Per mode the HSV proxy over a finite horizon of ``T`` steps (time-limited Gramians):
    ``sqrt(P_ii(T) Q_ii(T)) = |C_i| |B_i| (1 - |lam_i|^(2T)) / (1 - |lam_i|^2)``, with
    ``P(T) = sum_{k<T} A^k B B^H A^kH``. For ``T -> inf`` it is :func:`hsv_proxy_scores`; for
    modes slower than the horizon it saturates at ``~T |C_i||B_i|``, so a mode whose memory
    exceeds the sequence length is not ranked by a memory it cannot use (the infinite-horizon
    Gramian grows like ``1/(1-|lam|^2)``)."""
    if not (isinstance(T, int) and T >= 1):
        raise InvalidArgumentError(bad_arg("T", "an int >= 1", T))

    def scores(layer: nn.Module) -> np.ndarray:
        lam, B, C, _ = layer.system()
        r2 = np.abs(lam) ** 2
        return np.linalg.norm(C, axis=0) * np.linalg.norm(B, axis=1) * -np.expm1(T * np.log(r2)) / (1.0 - r2)

    return scores


def random_scores(seed: int) -> Callable[[nn.Module], np.ndarray]:
    """Scores that rank the modes in a seeded random order."""
    return lambda layer: np.random.default_rng(seed).permutation(layer.n_state).astype(float)


def keep_top(scores: np.ndarray, r: int, largest: bool = True) -> np.ndarray:
    """Indices (ascending) of the ``r`` largest (or smallest) scores."""
    if not 0 < r <= len(scores):
        raise InvalidArgumentError(bad_arg("r", f"an int in [1, {len(scores)}]", r))
    order = np.argsort(-scores if largest else scores, kind="stable")
    return np.sort(order[:r])


def select_modes(layer: nn.Module, opt: torch.optim.Optimizer | None, keep: Sequence[int], *,
                 rule: str, name: str = "", n_freq: int = 512, reset_optimizer: bool = False) -> Surgery:
    """Keep the diagonal modes ``keep`` (parameters and Adam moments sliced exactly). In place.

    ``reset_optimizer``: zero the layer's Adam state instead (``m = v = 0``, ``step = 0``), as
    the ``"reset"`` policy of :func:`balanced_surgery` does: an ablation that separates the
    choice of states from what happens to the optimizer.
    """
    if not isinstance(layer, (LRU, S4DReal)):
        raise InvalidArgumentError(bad_arg("layer", "an LRU or S4DReal layer", type(layer).__name__))
    idx = np.asarray(sorted(set(int(i) for i in keep)))
    N = layer.n_state
    if idx.size == 0 or idx[0] < 0 or idx[-1] >= N:
        raise InvalidArgumentError(bad_arg("keep", f"a non-empty set of mode indices in [0, {N})", list(keep)))
    full = balance_torch.diagonal_modes(layer)  # on the layer's device: the error check's input
    terms = _modal_terms(*(x.cpu().numpy() for x in full))
    dropped = np.setdiff1d(np.arange(N), idx)
    names = [n for n in _AXES if hasattr(layer, n)]
    vals = {n: torch.index_select(getattr(layer, n).detach(), _AXES[n], torch.as_tensor(idx, device=getattr(layer, n).device)) for n in names}
    moments: dict = {}
    if opt is not None and not reset_optimizer:
        for n in names:
            st = opt.state.get(getattr(layer, n))
            if st:
                sel = torch.as_tensor(idx, device=st["exp_avg"].device)
                moments[n] = (st["exp_avg"].index_select(_AXES[n], sel), st["exp_avg_sq"].index_select(_AXES[n], sel))
    _swap(layer, vals, opt, moments, reset=reset_optimizer)
    error = measured_error(full, balance_torch.diagonal_modes(layer), n_freq, layer.nu_log.device)
    return Surgery(name, rule, N, len(idx), tuple(int(i) for i in idx), (), tuple(float(t) for t in terms[dropped]),
                   float(terms[dropped].sum()), error, "sum(modal H-inf norms dropped)",
                   "reset" if reset_optimizer else "slice-exact")
