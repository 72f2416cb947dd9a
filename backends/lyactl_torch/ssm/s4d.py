"""A real-diagonal state-space layer (S4D-Real style, MIMO): the second layer type.

Equations (same step convention as :mod:`.lru`)::

    x[t] = lam * x[t-1] + B u[t],   x[-1] = 0,      lam = exp(-exp(nu_log))  in (0, 1)   [N]
    y[t] = C x[t] + D * u[t]                          B [N, H],  C [H, N],  D [H]

Initialisation: ``lam`` uniform in ``[r_min, r_max]``, ``B ~ N(0, (1 - lam^2)/H)`` (the
LRU's input normalisation folded into B), ``C ~ N(0, 1/N)``, ``D ~ N(0, 1)``.

The system is real, so its Gramians are those of ``(diag lam, B, C)`` with no real-output
doubling. Balanced truncation of a real diagonal system need not stay diagonal with real
eigenvalues (the reduced ``A`` can have complex pairs), so this layer is reduced only by mode
selection (:func:`lyactl_torch.ssm.truncate.select_modes`), whose certified bound is the
modal one: each dropped mode adds at most ``||C_i|| ||B_i|| / (1 - lam_i)`` to the H-infinity
error. Cost per token: ``4 N H`` real multiply-adds for B and C plus the scan.
``S4DRealConfig.layout``: the scan's memory layout, state-major by default, as for the LRU
(:class:`~lyactl_torch.ssm.lru.LRUConfig`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from lyactl.errors import InvalidArgumentError, bad_arg
from lyactl_torch.ssm.scan import chunked_scan_real, chunked_scan_real_state_major

__all__ = ["S4DRealConfig", "S4DReal"]


@dataclass(frozen=True)
class S4DRealConfig:
    """Shape and initialisation of an :class:`S4DReal` layer (``0 < r_min < r_max < 1``)."""

    d_model: int
    n_state: int
    r_min: float = 0.5
    r_max: float = 0.999
    chunk: int = 64
    layout: Literal["time", "state"] = "state"

    def __post_init__(self) -> None:
        if self.layout not in ("time", "state"):
            raise InvalidArgumentError(bad_arg("layout", "'time' or 'state'", self.layout))


class S4DReal(nn.Module):
    """Real-diagonal MIMO SSM layer; ``forward(u [B, T, H]) -> y [B, T, H]``."""

    def __init__(self, cfg: S4DRealConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if not 0.0 < cfg.r_min < cfg.r_max < 1.0:
            raise InvalidArgumentError(bad_arg("r_min/r_max", "0 < r_min < r_max < 1", (cfg.r_min, cfg.r_max)))
        self.cfg = cfg
        N, H = cfg.n_state, cfg.d_model
        lam = cfg.r_min + (cfg.r_max - cfg.r_min) * torch.rand(N, generator=generator)
        self.nu_log = nn.Parameter(torch.log(-torch.log(lam)))
        self.B = nn.Parameter(torch.randn(N, H, generator=generator) * torch.sqrt((1 - lam**2) / H)[:, None])
        self.C = nn.Parameter(torch.randn(H, N, generator=generator) / math.sqrt(N))
        self.D = nn.Parameter(torch.randn(H, generator=generator))

    @property
    def n_state(self) -> int:
        """The current number of (real) states."""
        return int(self.nu_log.shape[0])

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        if self.cfg.layout == "state":  # as LRU: the state axis first from B to C, no permuted copies
            Bt, T, H = u.shape
            b = self.B.to(u.dtype) @ u.reshape(Bt * T, H).mT  # [N, B*T]
            with torch.autocast(device_type=u.device.type, enabled=False):
                x = chunked_scan_real_state_major(-torch.exp(self.nu_log), b.float().view(-1, Bt, T), self.cfg.chunk)
            y = x.reshape(-1, Bt * T).to(u.dtype).mT @ self.C.to(u.dtype).mT  # [B*T, H]
            return y.view(Bt, T, H) + self.D.to(u.dtype) * u
        b = u @ self.B.to(u.dtype).T
        with torch.autocast(device_type=u.device.type, enabled=False):
            x = chunked_scan_real(-torch.exp(self.nu_log), b.float(), self.cfg.chunk)
        return x.to(u.dtype) @ self.C.to(u.dtype).T + self.D.to(u.dtype) * u

    def system(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(lam [N], B [N, H], C [H, N], D [H, H])`` as float64 numpy (output ``C x + D u``)."""
        with torch.no_grad():
            lam = torch.exp(-torch.exp(self.nu_log)).double().cpu().numpy()
            return lam, self.B.double().cpu().numpy(), self.C.double().cpu().numpy(), np.diag(self.D.double().cpu().numpy())
