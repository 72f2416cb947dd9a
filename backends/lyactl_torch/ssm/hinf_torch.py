"""The measured H-infinity error of a state truncation, on the layer's device.

For two diagonal real-output layers ``(lam, B, C)`` (complex ``lam``: LRU, ``y = Re(C x)``;
real ``lam``: S4D-real, ``y = C x``) and their difference ``E = G - G_r`` (D cancels)::

    error = max_w ||E(e^{iw})||_2  over a sampled set of w in [0, pi]      (E(e^{-iw}) = conj E(e^{iw}))

a LOWER bound of ``||G - G_r||_inf``, so ``error <= ||G - G_r||_inf <= bound`` must hold and
is checked, not assumed (:mod:`lyactl_torch.ssm.truncate`). The same evaluation as
:func:`lyactl.analysis.balanced.hinf_error` (the torch-free oracle) and the earlier
``truncate.measured_error``:

1. the grid: ``n_freq`` points evenly on ``[0, pi]`` plus the pole angles ``|arg lam|`` of
   both systems (where the resonance peaks sit);
2. on the grid, ``||E||_2`` by 30 power iterations on ``E^H E`` from a fixed start (a lower
   bound that converges to the norm; exact SVD norms for a side of at most 16);
3. EXACT 2-norms (up to round-off: :func:`spectral_norm`) at the 32 highest grid points, then
   the best point refined three times on a 33-point local grid of the neighbouring spacing
   (step / 16 each time), exact norms there too; the error is the largest value seen (every
   value is a lower bound, up to round-off for the exact ones).

``E(z) = C_d diag(1 / (z - lam_d)) B_d`` over the conjugate-augmented difference system
(``lam_d = [lam, conj lam, lam_r, conj lam_r]``, ``B_d = [B; conj B; -B_r; -conj B_r]``,
``C_d = [C, conj C, C_r, conj C_r] / 2``), evaluated for a batch of frequencies as one GEMM
``(C_d * d_f) @ B_d``. Everything stays on the device until the final float; the batch is sized
to keep the ``[F, P, N_d]`` intermediate near 1 GiB. Cost: ``(n_freq + 2N + 2r + 99)``
responses of ``O(P H (N + r))`` and as many ``P x H`` norms (131 of them exact).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

__all__ = ["hinf_error", "spectral_norm", "spectral_norm_lower"]

_BATCH_ELEMENTS = 2**26  # complex128 entries of the [F, P, N_d] intermediate (1 GiB)


def _augmented(lam: torch.Tensor, B: torch.Tensor, C: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Conjugate-augmented modes of a real-output layer (real ``lam``: the modes themselves)."""
    c = torch.complex128
    if not lam.is_complex():
        return lam.to(c), B.to(c), C.to(c)
    return torch.cat([lam, lam.conj()]), torch.cat([B, B.conj()], 0), torch.cat([C, C.conj()], 1) / 2


def _as_system(system: Sequence, device: torch.device | str) -> tuple[torch.Tensor, ...]:
    """``(lam, B, C)`` of a tuple of numpy arrays or tensors, on ``device``, float64 / complex128."""
    out = []
    for x in system[:3]:
        t = torch.as_tensor(x, device=device)
        out.append(t.to(torch.complex128 if t.is_complex() else torch.float64))
    return _augmented(*out)


def spectral_norm_lower(E: torch.Tensor, iters: int = 30) -> torch.Tensor:
    """``||E_f||_2`` of a batch ``[F, P, H]`` by power iteration on ``E^H E`` from a fixed
    start: a LOWER bound that converges to the norm (a batched SVD of thousands of 256 x 256
    complex matrices took tens of seconds per layer on the GPU). Small matrices use the SVD."""
    if min(E.shape[-2:]) <= 16:
        return torch.linalg.matrix_norm(E, ord=2)
    v = torch.ones(E.shape[0], E.shape[2], 1, dtype=E.dtype, device=E.device)
    for _ in range(iters):
        w = E.mH @ (E @ v)
        v = w / torch.linalg.vector_norm(w, dim=1, keepdim=True).clamp_min(1e-300)
    return torch.linalg.vector_norm(E @ v, dim=(1, 2))


def spectral_norm(E: torch.Tensor) -> torch.Tensor:
    """``||E_f||_2`` of a batch ``[F, P, H]``, exact up to round-off: ``sqrt(lambda_max(E^H E))``
    by ``eigvalsh`` (the top eigenvalue of a Hermitian matrix comes with absolute error
    ``~ eps ||E||^2``, so the norm with relative error ``~ eps``, as from an SVD). Chosen over
    ``matrix_norm(ord=2)`` (an SVD per matrix): 0.07 s against 0.68 s for 32 complex128
    256 x 256 matrices on an H200 (measured for issue 14), equal to 2e-13 relative there."""
    G = E.mH @ E if E.shape[-1] <= E.shape[-2] else E @ E.mH
    return torch.sqrt(torch.linalg.eigvalsh(G)[..., -1].clamp_min(0.0))


def _norms(lam: torch.Tensor, B: torch.Tensor, C: torch.Tensor, ws: torch.Tensor, exact: bool) -> torch.Tensor:
    """``||E(e^{i w})||_2`` for each ``w`` in ``ws`` (exact norms, or power-iteration lower
    bounds), in batches of frequencies."""
    per = max(1, _BATCH_ELEMENTS // (C.shape[0] * lam.shape[0]))
    out = []
    for chunk in torch.split(ws, per):
        d = 1.0 / (torch.exp(1j * chunk)[:, None] - lam[None, :])  # [F, N_d]
        E = (C[None] * d[:, None, :]) @ B  # [F, P, H]
        out.append(spectral_norm(E) if exact else spectral_norm_lower(E))
    return torch.cat(out)


@torch.no_grad()
def hinf_error(full: Sequence, reduced: Sequence, n_freq: int = 512, device: torch.device | str = "cpu") -> float:
    """``max_w ||G(e^{iw}) - G_r(e^{iw})||_2`` (module docstring) for ``full = (lam, B, C[, D])``
    and ``reduced`` likewise: numpy arrays or tensors, moved to ``device``. A lower bound of
    the H-infinity norm of the difference. Cost: module docstring."""
    (l1, B1, C1), (l2, B2, C2) = _as_system(full, device), _as_system(reduced, device)
    lam, B, C = torch.cat([l1, l2]), torch.cat([B1, -B2], 0), torch.cat([C1, C2], 1)
    even = torch.linspace(0, math.pi, n_freq, dtype=torch.float64, device=lam.device)
    grid = torch.unique(torch.cat([even, torch.angle(lam).abs()]))  # sorted
    rough = _norms(lam, B, C, grid, exact=False)
    top = grid[torch.argsort(-rough)[:32]]  # exact norms where the power iteration saw the peaks
    vals = _norms(lam, B, C, top, exact=True)
    best_w, best = float(top[torch.argmax(vals)]), float(torch.maximum(vals.max(), rough.max()))
    step = math.pi / (n_freq - 1)
    for _ in range(3):
        local = torch.linspace(best_w - step, best_w + step, 33, dtype=torch.float64, device=lam.device)
        v = _norms(lam, B, C, local, exact=True)
        if float(v.max()) > best:
            best_w, best = float(local[torch.argmax(v)]), float(v.max())
        step /= 16
    return best
