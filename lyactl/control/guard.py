"""Closed-loop guard: watch the loss after each event, restore on a rise, else release.

Before an event the guard keeps the last ``pre_window`` reports of the loss; at the event
it fits the trend ``L(s) ~ a + b (s - s0)`` (least squares, ``numpy.polyfit``) with residual
standard deviation ``sigma``. For the next ``window`` reports it compares the observed
loss with the extrapolated trend; with residuals ``r_j = L(s_j) - a - b (s_j - s0)`` it
emits the event in ``restores`` as soon as

    mean_j r_j > tol,   tol = tol_rel * |a| + z * sigma,

and in ``releases`` once ``window`` reports passed without that. The signal is
``val_loss`` when it was finite on the whole pre-event window, else the training loss;
post-event reports with a non-finite signal are skipped (not counted).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from lyactl.errors import InvalidArgumentError, bad_arg
from lyactl.control.groups import Event

__all__ = ["GuardConfig", "Guard", "trend_fit"]


@dataclass(frozen=True)
class GuardConfig:
    """Reports watched after an event, pre-event fit length, tolerances."""

    window: int = 8
    pre_window: int = 8
    tol_rel: float = 0.02
    z: float = 3.0

    def __post_init__(self) -> None:
        for name in ("window", "pre_window"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise InvalidArgumentError(bad_arg(f"GuardConfig.{name}", "an int >= 1", getattr(self, name)))
        for name in ("tol_rel", "z"):
            if not getattr(self, name) >= 0:
                raise InvalidArgumentError(bad_arg(f"GuardConfig.{name}", "a number >= 0", getattr(self, name)))


def trend_fit(steps: np.ndarray, values: np.ndarray, s0: int) -> tuple[float, float, float]:
    """``(a, b, sigma)`` of ``values ~ a + b (steps - s0)``; constant fit under 3 points."""
    x = np.asarray(steps, float) - s0
    y = np.asarray(values, float)
    if y.size == 0:
        return math.nan, 0.0, 0.0
    if y.size < 3:
        return float(y.mean()), 0.0, float(y.std())
    b, a = np.polyfit(x, y, 1)
    resid = y - (a + b * x)
    return float(a), float(b), float(np.sqrt(resid @ resid / (y.size - 2)))


class Guard:
    """Watches events one at a time (the controller opens no event while one is watched)."""

    def __init__(self, config: GuardConfig) -> None:
        self.config = config
        self.history: list[tuple[int, float, float]] = []  # (step, loss, val_loss)
        self.watches: list[dict[str, Any]] = []

    @property
    def busy(self) -> bool:
        return bool(self.watches)

    def record(self, step: int, loss: float, val_loss: float) -> None:
        """Append one report to the pre-event history (call once per report)."""
        self.history.append((int(step), float(loss), float(val_loss)))
        del self.history[: -self.config.pre_window]

    def watch(self, event: Event) -> None:
        """Start watching ``event`` (fit the trend on the history so far)."""
        hist = np.array(self.history, float).reshape(-1, 3)
        use_val = hist.shape[0] >= 3 and bool(np.isfinite(hist[:, 2]).all())
        col = 2 if use_val else 1
        keep = np.isfinite(hist[:, col])
        a, b, sigma = trend_fit(hist[keep, 0], hist[keep, col], event.step)
        self.watches.append({"event": event, "signal": "val_loss" if use_val else "loss",
                             "a": a, "b": b, "sigma": sigma, "residuals": []})

    def observe(self, step: int, loss: float, val_loss: float) -> tuple[list[Event], list[Event]]:
        """Feed one report after :meth:`record`; return ``(restores, releases)``."""
        restores, releases, still = [], [], []
        for w in self.watches:
            value = val_loss if w["signal"] == "val_loss" else loss
            if step > w["event"].step and math.isfinite(value) and math.isfinite(w["a"]):
                w["residuals"].append(value - (w["a"] + w["b"] * (step - w["event"].step)))
            tol = self.config.tol_rel * abs(w["a"]) + self.config.z * w["sigma"]
            if w["residuals"] and float(np.mean(w["residuals"])) > tol:
                restores.append(w["event"])
            elif len(w["residuals"]) >= self.config.window:
                releases.append(w["event"])
            else:
                still.append(w)
        self.watches = still
        return restores, releases

    def state_dict(self) -> dict[str, Any]:
        from lyactl.control.decision_log import encode_array, event_to_json

        return {"history": [encode_array(np.array(h, float)) for h in self.history],
                "watches": [{"signal": w["signal"], "fit": encode_array(np.array([w["a"], w["b"], w["sigma"]])),
                             "event": event_to_json(w["event"]),
                             "residuals": encode_array(np.array(w["residuals"], float))}
                            for w in self.watches]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        from lyactl.control.decision_log import decode_array, event_from_json

        self.history = [(int(h[0]), float(h[1]), float(h[2])) for h in map(decode_array, state["history"])]
        self.watches = []
        for w in state["watches"]:
            a, b, sigma = (float(v) for v in decode_array(w["fit"]))
            self.watches.append({"event": event_from_json(w["event"]), "signal": w["signal"], "a": a, "b": b,
                                 "sigma": sigma, "residuals": [float(r) for r in decode_array(w["residuals"])]})
