"""The settings of :func:`lyactl_torch.compress.compress` (``lyactl compress``): one validated,
frozen dataclass; every field's meaning is in its docstring, every error names the field."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lyactl.errors import InvalidArgumentError, bad_arg

__all__ = ["METHODS", "PRIORS", "CompressConfig"]

METHODS = ("lyactl", "oneshot", "measured", "replay")
PRIORS = ("activation",)  # the controller's importance priors (method "lyactl" only)


@dataclass(frozen=True)
class CompressConfig:
    """What :func:`compress` does; every field is validated (errors name it).

    ``target_flops`` in (0, 1): the final FLOPs/token over the original's; ``tokens``: training
    tokens; ``distill``: the temperature ``tau`` (None: no teacher); ``alpha``: the KL's weight;
    ``uniform``: one width for every layer (Hugging Face models; exportable);
    ``interval``: steps between controller reports (None: ``steps // 40``, at least 1);
    ``prior``: None (rank by ``|g . w|``) or ``"activation"`` (method ``"lyactl"`` only);
    ``freeze``: let the controller freeze converged blocks, its budget counting pruned groups
    only (default), or not (False: no freezing, a training-FLOPs budget; the behaviour before);
    ``settled_eps``: with ``freeze``, also freeze a block where the settled-group certificate
    holds (:mod:`lyactl.control.settled`: the upper confidence bound of the loss decrease its own
    updates still buy, over the learning rate to come, below ``settled_eps |loss| / n_blocks``;
    the backend then measures ``gdw``); None: only the built-in convergence rule;
    ``rounds``, ``round_frac``, ``remove_eps``: method ``"measured"``'s number of pruning rounds,
    their spacing (fraction of the run) and the harmless tolerance (fraction of the loss);
    ``calib_rows``: sequences per calibration batch there (None: ``batch_size``; every group
    costs one forward over ``calib_batches * calib_rows`` sequences, counted in ``train_flops``).
    """

    target_flops: float
    tokens: int
    method: str = "lyactl"
    batch_size: int = 8
    seq_len: int = 64
    lr: float = 1e-3
    warmup_frac: float = 0.05
    min_lr_frac: float = 0.1
    grad_clip: float = 1.0
    distill: float | None = None
    alpha: float = 0.5
    uniform: bool = False
    interval: int | None = None
    block: int = 32
    u_max: float = 3.0
    calib_batches: int = 4
    device: str = "cpu"
    seed: int = 0
    prior: str | None = None
    freeze: bool = True
    settled_eps: float | None = 1e-3
    rounds: int = 1
    round_frac: float = 0.1
    remove_eps: float = 1e-3
    calib_rows: int | None = None

    def __post_init__(self) -> None:
        checks: dict[str, tuple[bool, str]] = {
            "target_flops": (_real(self.target_flops) and 0 < self.target_flops < 1, "a number in (0, 1)"),
            "tokens": (_int(self.tokens) and self.tokens >= 1, "an int >= 1"),
            "method": (self.method in METHODS, f"one of {METHODS}"),
            "batch_size": (_int(self.batch_size) and self.batch_size >= 1, "an int >= 1"),
            "seq_len": (_int(self.seq_len) and self.seq_len >= 2, "an int >= 2"),
            "lr": (_real(self.lr) and self.lr > 0, "a number > 0"),
            "warmup_frac": (_real(self.warmup_frac) and 0 <= self.warmup_frac < 1, "a number in [0, 1)"),
            "min_lr_frac": (_real(self.min_lr_frac) and 0 <= self.min_lr_frac <= 1, "a number in [0, 1]"),
            "grad_clip": (_real(self.grad_clip) and self.grad_clip >= 0, "a number >= 0"),
            "distill": (self.distill is None or (_real(self.distill) and self.distill > 0), "None or a number > 0"),
            "alpha": (_real(self.alpha) and 0 <= self.alpha <= 1, "a number in [0, 1]"),
            "interval": (self.interval is None or (_int(self.interval) and self.interval >= 1), "None or an int >= 1"),
            "block": (_int(self.block) and self.block >= 1, "an int >= 1"),
            "calib_batches": (_int(self.calib_batches) and self.calib_batches >= 1, "an int >= 1"),
            "prior": (self.prior is None or (self.prior in PRIORS and self.method == "lyactl"),
                      f"None, or one of {PRIORS} with method 'lyactl'"),
            "freeze": (isinstance(self.freeze, bool), "True or False"),
            "settled_eps": (self.settled_eps is None or (_real(self.settled_eps) and self.settled_eps > 0),
                            "None or a number > 0"),
            "rounds": (_int(self.rounds) and self.rounds >= 1, "an int >= 1"),
            "round_frac": (_real(self.round_frac) and 0 < self.round_frac and (self.rounds - 1) * self.round_frac < 1
                           if _int(self.rounds) else False, "a number > 0 with (rounds - 1) * round_frac < 1"),
            "remove_eps": (_real(self.remove_eps) and self.remove_eps > 0, "a number > 0"),
            "calib_rows": (self.calib_rows is None or (_int(self.calib_rows) and 1 <= self.calib_rows <= self.batch_size)
                           if _int(self.batch_size) else False, "None or an int in [1, batch_size]"),
        }
        for name, (ok, expected) in checks.items():
            if not ok:
                raise InvalidArgumentError(bad_arg(name, expected, getattr(self, name)))
        at = self.round_steps
        if self.method == "measured" and (len(set(at)) != len(at) or at[-1] >= self.steps):
            raise InvalidArgumentError(bad_arg("round_frac", f"rounds on distinct steps before the last of {self.steps} "
                                               f"steps ({self.rounds} rounds)", f"{self.round_frac} (steps {at})"))

    @property
    def steps(self) -> int:
        return max(1, math.ceil(self.tokens / (self.batch_size * self.seq_len)))

    @property
    def round_steps(self) -> list[int]:
        """Method ``"measured"``: the steps of its rounds, ``round(k * round_frac * steps)``."""
        return [round(k * self.round_frac * self.steps) for k in range(self.rounds)]

    @property
    def report_interval(self) -> int:
        return self.interval if self.interval is not None else max(1, self.steps // 40)


def _real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
