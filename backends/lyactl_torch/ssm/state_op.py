"""State truncation of one SSM layer as an :class:`~lyactl_torch.operations.Operation` with an
exact undo, and the per-layer report the decision side reads.

:class:`TruncateState` runs :func:`~lyactl_torch.ssm.truncate.balanced_surgery` (LRU) or
:func:`~lyactl_torch.ssm.truncate.select_modes` (LRU or S4D-real, modes by their modal bound).
Those replace the layer's parameters by NEW ``nn.Parameter`` objects and move the optimizer's
entries to them; the old Parameter objects are left untouched. :meth:`TruncateState.apply`
therefore keeps the old objects and a copy of their optimizer state (a copy: the ``"slice"``
surgery shares Adam's ``step`` tensor with the new parameter, and Adam increments it in
place), and :meth:`TruncateState.undo` puts the very same objects back, in the module and at
their place in the optimizer's parameter groups, with the copied state: bit-exact weights and
moments, and ``step`` as it was (training of the layer since the cut is lost). The ``layout``
argument of the protocol is not used (None is fine).

Why no ArchitectureAdapter / Layout for the SSM LM: a Layout tracks live unit ids of axes
that are SLICED and holds the Parameter objects it slices; balanced truncation replaces the
state by a new basis of another size (no old state survives as a unit) and the surgery swaps
the Parameter objects, so a Layout would go stale after the first cut. The SSM path counts
its FLOPs from the shapes instead (:func:`lyactl_torch.ssm.lm.flops_per_token`, after every
cut), and :func:`layer_report` prices one weight from the same formulas.

:func:`layer_report` computes, on the layer's device in float64, the layer's weights for the
decision: the Hankel singular values of the LRU's 2N-state REAL-output realisation
(:func:`lyactl_torch.ssm.balance_torch.hankel_singular_values`, the core's
:func:`~lyactl.analysis.gramians.hsv_from_gramians` of the closed-form Gramians): O(N^2 H) for
the Gramians plus O((2N)^3) for the factors and the SVD, per layer and report, or the
modal bounds ``||C_i|| ||B_i|| / (1 - |lam_i|)`` (O(N H)). Non-finite parameters give NaN
weights (the decision side then skips the layer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from lyactl.control.state_certificate import StateCertificate
from lyactl.control.state_truncation import LayerReport
from lyactl.errors import InvalidArgumentError, LyactlError, bad_arg
from lyactl_torch.ssm.balance_torch import diagonal_modes, hankel_singular_values
from lyactl_torch.ssm.lru import LRU
from lyactl_torch.ssm.s4d import S4DReal
from lyactl_torch.ssm.truncate import Surgery, balanced_surgery, keep_top, magnitude_scores, select_modes

__all__ = ["TruncateState", "StateRecord", "layer_report", "flops_per_mode"]

_NAMES = ("nu_log", "theta_log", "gamma_log", "B_re", "B_im", "C_re", "C_im", "B", "C")


def flops_per_mode(layer: nn.Module, seq_len: int) -> float:
    """Training FLOPs/token of one diagonal mode: 3 x (projections + scan) as counted by
    :func:`lyactl_torch.ssm.lm.flops_per_token` (LRU ``8H + 8L + 16``; S4D ``4H + 2L + 4``)."""
    H, L = layer.cfg.d_model, min(layer.cfg.chunk, seq_len)
    return 3.0 * ((8.0 * H + 8.0 * L + 16.0) if isinstance(layer, LRU) else (4.0 * H + 2.0 * L + 4.0))


def _method(layer: nn.Module, lru_method: str) -> Literal["balanced", "modal"]:
    if isinstance(layer, LRU):
        return "balanced" if lru_method == "balanced" else "modal"
    if isinstance(layer, S4DReal):
        return "modal"
    raise InvalidArgumentError(bad_arg("layer", "an LRU or S4DReal layer", type(layer).__name__))


def layer_report(layer: nn.Module, name: str, index: int, seq_len: int,
                 lru_method: Literal["balanced", "modal"] = "balanced") -> LayerReport:
    """The layer's weights, descending, and their FLOPs (module docstring; cost there).
    Balanced LRU weights are per REAL state (a mode is two), so one costs half a mode."""
    method = _method(layer, lru_method)
    per_mode = flops_per_mode(layer, seq_len)
    try:
        if method == "balanced":
            w = hankel_singular_values(*diagonal_modes(layer))
            return LayerReport(name, index, method, tuple(float(x) for x in w), per_mode / 2,
                               2 if np.iscomplexobj(layer.system()[0]) else 1)
        w = np.sort(magnitude_scores(layer))[::-1]
    except (LyactlError, np.linalg.LinAlgError, torch.linalg.LinAlgError, ValueError):  # NaN / unstable: no decision
        n = layer.n_state * (2 if method == "balanced" else 1)
        return LayerReport(name, index, method, (math.nan,) * n, per_mode)
    return LayerReport(name, index, method, tuple(float(x) for x in w), per_mode)


@dataclass(frozen=True, eq=False)
class StateRecord:
    """What :meth:`TruncateState.undo` needs, and the surgery's certificate data."""

    saved: tuple[tuple[str, nn.Parameter, dict[str, Any]], ...]
    surgery: Surgery
    certificate: StateCertificate


def _copy_state(st: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in st.items()}


@dataclass(frozen=True, eq=False)
class TruncateState:
    """Cut ``layer`` to ``keep`` (balanced: real states; modal: modes, by largest modal bound).

    ``policy``, ``mode_scale``, ``max_modes``: Adam's state under a change of basis, the new
    modes' scaling and a cap on the complex modes kept (:func:`~.truncate.balanced_surgery`);
    modal selection slices it exactly. ``step`` is written into the certificate.
    """

    layer: nn.Module
    name: str
    method: Literal["balanced", "modal"]
    keep: int
    step: int = 0
    policy: Literal["approx", "reset", "slice"] = "reset"
    n_freq: int = 512
    mode_scale: Literal["eig", "layer"] = "eig"
    max_modes: int | None = None

    def apply(self, layout: Any, optimizer: torch.optim.Optimizer | None) -> StateRecord:
        lay = self.layer
        names = [n for n in _NAMES if isinstance(getattr(lay, n, None), nn.Parameter)]
        state = optimizer.state if optimizer is not None else {}
        saved = tuple((n, getattr(lay, n), _copy_state(state.get(getattr(lay, n), {}))) for n in names)
        modes_before = lay.n_state
        per = 2 if isinstance(lay, LRU) else 1
        hsv: tuple[float, ...] = ()
        if self.method == "balanced":
            rec = balanced_surgery(lay, optimizer, rank=self.keep, policy=self.policy, name=self.name,
                                   n_freq=self.n_freq, mode_scale=self.mode_scale, max_modes=self.max_modes)
            states_after, hsv = len(rec.hsv) - len(rec.discarded), rec.hsv  # the rank used
        else:
            scores = magnitude_scores(lay)
            rec = select_modes(lay, optimizer, keep_top(scores, self.keep), rule="magnitude", name=self.name,
                               n_freq=self.n_freq)
            states_after, hsv = per * lay.n_state, tuple(float(s) for s in np.sort(scores)[::-1])
        cert = StateCertificate(self.name, self.method, self.step, per * modes_before, states_after, modes_before,
                                lay.n_state, tuple(rec.discarded), rec.error, self.n_freq, hsv, rec.kept, rec.rule,
                                rec.policy)
        return StateRecord(saved, rec, cert)

    def undo(self, layout: Any, optimizer: torch.optim.Optimizer | None, record: StateRecord) -> None:
        for n, old, st in record.saved:
            new = getattr(self.layer, n)
            setattr(self.layer, n, old)
            old.grad = None
            if optimizer is None:
                continue
            for group in optimizer.param_groups:
                group["params"] = [old if p is new else p for p in group["params"]]
            optimizer.state.pop(new, None)
            if st:
                optimizer.state[old] = _copy_state(st)
