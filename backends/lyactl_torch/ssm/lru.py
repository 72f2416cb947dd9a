"""Linear Recurrent Unit (Orvieto et al. 2023): a complex-diagonal, stable-by-construction layer.

The layer maps ``u[t] in R^H`` to ``y[t] in R^H`` through ``N`` complex states::

    x[t] = lam * x[t-1] + (gamma * B) u[t],   x[-1] = 0
    y[t] = Re(C x[t]) + D * u[t]

    lam   = exp(-exp(nu_log) + i exp(theta_log))        [N]   (|lam| < 1 for every real nu_log)
    gamma = exp(gamma_log), initialised sqrt(1 - |lam|^2)  [N]   (input normalisation)
    B = B_re + i B_im  [N, H],   C = C_re + i C_im  [H, N],   D  [H]

Complex parameters are stored as (real, imaginary) pairs of real ``nn.Parameter`` s, so every
optimizer and ``torch.compile`` see real tensors. Initialisation follows the LRU paper:
``|lam|`` uniform on the ring ``r_min <= |lam| <= r_max`` (area-uniform), phase uniform in
``(0, max_phase)``, ``B_re, B_im ~ N(0, 1/(2H))``, ``C_re, C_im ~ N(0, 1/N)``,
``D ~ N(0, 1)``.

In the standard state-space convention ``x[k+1] = A x[k] + B u[k]`` the same input-output
map is ``z * C (zI - A)^-1 B`` (one step of lead), which has the same Markov parameters
``C lam^m B`` and so the same Gramians, Hankel singular values and H-infinity norm: the
analysis of ``(lam, gamma B, C)`` applies unchanged (``|z| = 1`` on the unit circle).

Cost per token: ``8 N H`` real multiply-adds for the two projections (complex B and C, real
input and output) plus the scan, ``O(N L)`` (:mod:`.scan`). ``LRUConfig.layout`` picks the
scan's memory layout: ``"state"`` (default) keeps the state axis first from the input
projection to the output projection (:func:`~lyactl_torch.ssm.scan.chunked_scan_state_major`);
``"time"`` is the time-major scan every GPU record before 2026-12-02 (late) ran with. Same map,
same gradients (tests/test_torch_ssm.py); on a 2-core CPU (d 64, 256 modes, batch 4 x 256) the
state-major step took 159 ms against 264 ms, its ``copy_`` calls 461 against 4525. Not yet
timed on a GPU (``python -m benchmarks.ssm.step_time --device cuda`` compares both).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from lyactl.errors import InvalidArgumentError, bad_arg
from lyactl_torch.ssm.scan import chunked_scan, chunked_scan_state_major

__all__ = ["LRUConfig", "LRU"]


@dataclass(frozen=True)
class LRUConfig:
    """Shape and initialisation of an :class:`LRU` layer (``r_min < r_max < 1``)."""

    d_model: int
    n_state: int
    r_min: float = 0.9
    r_max: float = 0.999
    max_phase: float = 2 * math.pi
    chunk: int = 64
    layout: Literal["time", "state"] = "state"

    def __post_init__(self) -> None:
        if self.layout not in ("time", "state"):
            raise InvalidArgumentError(bad_arg("layout", "'time' or 'state'", self.layout))


class LRU(nn.Module):
    """The LRU layer; ``forward(u [B, T, H]) -> y [B, T, H]`` (module docstring: equations)."""

    def __init__(self, cfg: LRUConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if not 0.0 < cfg.r_min < cfg.r_max < 1.0:
            raise InvalidArgumentError(bad_arg("r_min/r_max", "0 < r_min < r_max < 1", (cfg.r_min, cfg.r_max)))
        self.cfg = cfg
        N, H = cfg.n_state, cfg.d_model
        g = generator
        u1, u2 = torch.rand(N, generator=g), torch.rand(N, generator=g)
        nu = -0.5 * torch.log(u1 * (cfg.r_max**2 - cfg.r_min**2) + cfg.r_min**2)
        theta = (u2 * cfg.max_phase).clamp(min=1e-4)
        self.nu_log = nn.Parameter(torch.log(nu))
        self.theta_log = nn.Parameter(torch.log(theta))
        self.gamma_log = nn.Parameter(0.5 * torch.log(1 - torch.exp(-2 * nu)))
        self.B_re = nn.Parameter(torch.randn(N, H, generator=g) / math.sqrt(2 * H))
        self.B_im = nn.Parameter(torch.randn(N, H, generator=g) / math.sqrt(2 * H))
        self.C_re = nn.Parameter(torch.randn(H, N, generator=g) / math.sqrt(N))
        self.C_im = nn.Parameter(torch.randn(H, N, generator=g) / math.sqrt(N))
        self.D = nn.Parameter(torch.randn(H, generator=g))

    @property
    def n_state(self) -> int:
        """The current number of complex states (the parameters' shapes are the truth)."""
        return int(self.nu_log.shape[0])

    def log_lam(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Re log lam, Im log lam) = (-exp(nu_log), exp(theta_log))``, each ``[N]``."""
        return -torch.exp(self.nu_log), torch.exp(self.theta_log)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        if self.cfg.layout == "state":
            return self._forward_state_major(u)
        N = self.n_state
        g = torch.exp(self.gamma_log).unsqueeze(-1)
        Wb = torch.cat([self.B_re * g, self.B_im * g], dim=0)  # [2N, H]
        b = u @ Wb.to(u.dtype).T
        a, w = self.log_lam()
        with torch.autocast(device_type=u.device.type, enabled=False):
            x_re, x_im = chunked_scan(a, w, b[..., :N].float(), b[..., N:].float(), self.cfg.chunk)
        Wc = torch.cat([self.C_re, -self.C_im], dim=1)  # [H, 2N]: Re(C x) = C_re x_re - C_im x_im
        x = torch.cat([x_re, x_im], dim=-1).to(u.dtype)
        return x @ Wc.to(u.dtype).T + self.D.to(u.dtype) * u

    def _forward_state_major(self, u: torch.Tensor) -> torch.Tensor:
        """The same map with the scan in ``[N, B, T]`` layout
        (:func:`~lyactl_torch.ssm.scan.chunked_scan_state_major`): ``b = W_b u^T`` and
        ``y = x^T W_c^T`` as GEMMs with transposed operands, so the state never changes layout."""
        N, (Bt, T, H) = self.n_state, u.shape
        g = torch.exp(self.gamma_log).unsqueeze(-1)
        Wb = torch.cat([self.B_re * g, self.B_im * g], dim=0).to(u.dtype)  # [2N, H]
        u2 = u.reshape(Bt * T, H)
        b = Wb @ u2.mT  # [2N, B*T]
        a, w = self.log_lam()
        with torch.autocast(device_type=u.device.type, enabled=False):
            x_re, x_im = chunked_scan_state_major(a, w, b[:N].float().view(N, Bt, T), b[N:].float().view(N, Bt, T),
                                                  self.cfg.chunk)
        Wc = torch.cat([self.C_re, -self.C_im], dim=1).to(u.dtype)  # [H, 2N]
        x = torch.cat([x_re.reshape(N, Bt * T), x_im.reshape(N, Bt * T)], dim=0).to(u.dtype)  # [2N, B*T]
        y = x.mT @ Wc.mT  # [B*T, H]
        return y.view(Bt, T, H) + self.D.to(u.dtype) * u

    def system(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The layer as a complex-diagonal system ``(lam [N], gamma B [N, H], C [H, N], D [H, H])``
        in float64/complex128 numpy (for the torch-free analysis; output ``Re(C x) + D u``)."""
        with torch.no_grad():
            a, w = (t.double().cpu().numpy() for t in self.log_lam())
            g = torch.exp(self.gamma_log).double().cpu().numpy()[:, None]
            B = (self.B_re.double().cpu().numpy() + 1j * self.B_im.double().cpu().numpy()) * g
            C = self.C_re.double().cpu().numpy() + 1j * self.C_im.double().cpu().numpy()
            D = np.diag(self.D.double().cpu().numpy())
        return np.exp(a + 1j * w), B, C, D
