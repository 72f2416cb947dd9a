"""The sliding window of per-group statistics that every monitor reads.

:class:`StatsWindow` keeps the last ``W`` reports of every statistic (``[W, n_groups]``
views, oldest report first), the per-report scalars, the running peak of ``w_sq`` and,
for the statistics a monitor asks about, the successive ratios
``V_{k+lag} / (V_k + TINY)`` maintained one row per report (``O(n)`` per push instead of
``O(W n)`` per read). Results shared between monitors within one report go through
:meth:`StatsWindow.cached`.

:meth:`StatsWindow.columns` gives a :class:`ColumnWindow`: the same reading interface
(:class:`Window`) over a subset of the groups, so a monitor can be evaluated only where its
verdict can change a decision (the controller does that, see :mod:`lyactl.control.controller`).
Monitors read windows only through :class:`Window`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Protocol

import numpy as np

from lyactl.errors import InvalidArgumentError, ShapeError, bad_arg
from lyactl.control.groups import STAT_FIELDS, GroupStats

__all__ = ["Window", "StatsWindow", "ColumnWindow", "WINDOW_FIELDS", "TINY"]

TINY = 1e-300
"""Added to denominators so that a window of exact zeros (a group that does not move)
reads as contraction, and 0/0 never appears."""

WINDOW_FIELDS: tuple[str, ...] = STAT_FIELDS + ("curv_used", "removal_dL")
_SCALARS: tuple[str, ...] = ("step", "lr", "loss", "weight_decay", "interval", "val_loss")


class Window(Protocol):
    """What a monitor may read: ``[W, n]`` fields over ``n = n_groups`` columns (all groups,
    or a subset of them), per-report scalars, and a per-report memo.

    ``n_total`` is the number of groups of the model (``n_groups`` of a subset is smaller);
    tolerances that share a loss budget among groups divide by ``n_total``.
    """

    n_groups: int
    n_total: int
    length: int
    peak_w_sq: np.ndarray

    @property
    def full(self) -> bool: ...

    def field(self, name: str) -> np.ndarray: ...

    def scalar(self, name: str) -> np.ndarray: ...

    def steps(self) -> tuple[int, int]: ...

    def cached(self, key: Any, fn: Callable[[], Any]) -> Any: ...

    def max_ratio(self, f: str, lag: int) -> np.ndarray: ...


class StatsWindow:
    """The last ``length`` reports of every statistic, ordered oldest to newest.

    Stored twice over in a ``[2W, n]`` buffer so that :meth:`field` is a zero-copy view
    (``O(n)`` per push, no reordering). ``curv_used`` is ``curv`` where finite and
    ``curv_factor / lr`` elsewhere (NaN if ``curv_factor`` is None); ``removal_dL`` is
    ``|-gw + curv_used w_sq / 2|``. ``peak_w_sq`` is the running maximum of finite
    ``w_sq`` per group.
    """

    def __init__(self, n_groups: int, length: int, curv_factor: float | None = 2.0) -> None:
        if length < 3:
            raise InvalidArgumentError(bad_arg("StatsWindow.length", "an int >= 3", length))
        self.n_groups, self.length, self.curv_factor = int(n_groups), int(length), curv_factor
        self.n_total = self.n_groups
        self._buf = {f: np.full((2 * length, n_groups), np.nan) for f in WINDOW_FIELDS}
        self._scal = {s: np.full(2 * length, np.nan) for s in _SCALARS}
        self.peak_w_sq = np.zeros(n_groups)
        self.head = 0
        self.count = 0
        self.memo: dict[Any, Any] = {}
        self._views: dict[str, np.ndarray] = {}  # field views of the current head (same object per report)
        # successive ratios V_k / (V_{k-lag} + TINY) per (field, lag), created on first use by
        # max_ratio and then kept up to date one row per push
        self._ratio: dict[tuple[str, int], np.ndarray] = {}

    @property
    def full(self) -> bool:
        return self.count >= self.length

    def push(self, stats: GroupStats, ignore: np.ndarray | None = None) -> None:
        """Append one report; groups where ``ignore`` is True are stored as NaN.

        Cost: ``O(n)`` per field and per ratio ring in use; no allocation of ``[W, n]``.
        """
        stats.validate(self.n_groups)
        r0, r1 = self.head, self.head + self.length
        drop = np.flatnonzero(ignore) if ignore is not None and ignore.any() else None
        for f in STAT_FIELDS:
            row = self._buf[f][r0]
            row[:] = getattr(stats, f)
            if drop is not None:
                row[drop] = np.nan
        self._push_derived(stats, r0, drop)
        for f in WINDOW_FIELDS:
            self._buf[f][r1] = self._buf[f][r0]
        for s in _SCALARS:
            self._scal[s][r0] = self._scal[s][r1] = float(getattr(stats, s))
        for (f, lag), ring in self._ratio.items():
            with np.errstate(all="ignore"):
                np.add(self._buf[f][r1 - lag], TINY, out=ring[r1])
                np.divide(self._buf[f][r0], ring[r1], out=ring[r0])
            ring[r1] = ring[r0]
        self.peak_w_sq = np.fmax(self.peak_w_sq, self._buf["w_sq"][r0])
        self.head = (self.head + 1) % self.length
        self.count += 1
        self.memo, self._views = {}, {}

    def _push_derived(self, stats: GroupStats, r0: int, drop: np.ndarray | None) -> None:
        """Rows ``r0`` of ``curv_used`` and ``removal_dL`` (after the raw fields)."""
        default = self.curv_factor / stats.lr if self.curv_factor is not None and stats.lr > 0 else math.nan
        cu, dL = self._buf["curv_used"][r0], self._buf["removal_dL"][r0]
        known = np.isfinite(stats.curv)
        if not known.any():  # the common case: the backend measures no curvature
            cu.fill(default)
        else:
            cu[:] = stats.curv
            np.copyto(cu, default, where=~known)
        if drop is not None:
            cu[drop] = np.nan
        with np.errstate(all="ignore"):  # same order of operations as 0.5*curv_used*w_sq - gw
            np.multiply(cu, 0.5, out=dL)
            dL *= self._buf["w_sq"][r0]
            dL -= self._buf["gw"][r0]
            np.abs(dL, out=dL)

    def max_ratio(self, f: str, lag: int) -> np.ndarray:
        """``max_k V_{k+lag} / (V_k + TINY)`` over the window for statistic ``f``, ``[n]``
        (cached per report; the first call for ``(f, lag)`` starts its ratio ring)."""
        if f not in self._buf or not 1 <= lag < self.length:
            return _window_max_ratio(self.field(f), lag)
        if (f, lag) not in self._ratio:
            self._ratio[(f, lag)] = self._ring(f, lag)
        return self.cached(("max_ratio", f, lag),
                           lambda: np.max(self._ratio[(f, lag)][self.head + lag:self.head + self.length], axis=0))

    def _ring(self, f: str, lag: int) -> np.ndarray:
        """The ratio ring of ``(f, lag)`` computed from the window (same numbers as push)."""
        V, h, W = self.field(f), self.head, self.length
        ring = np.full((2 * W, self.n_groups), np.nan)
        with np.errstate(all="ignore"):
            ring[h + lag:h + W] = V[lag:] / (V[:-lag] + TINY)
        ring[:h] = ring[W:W + h]
        ring[h + W:] = ring[h:W]  # keeps both halves equal, as push does (not read before rewritten)
        return ring

    def cached(self, key: Any, fn: Callable[[], Any]) -> Any:
        """``fn()`` computed once per report for ``key`` (shared by monitors)."""
        if key not in self.memo:
            self.memo[key] = fn()
        return self.memo[key]

    def field(self, name: str) -> np.ndarray:
        """``[W, n]`` view of a statistic, oldest report first (no copy; one view object per
        report, so monitors can recognise it by identity)."""
        view = self._views.get(name)
        if view is None:
            view = self._views[name] = self._buf[name][self.head:self.head + self.length]
        return view

    def scalar(self, name: str) -> np.ndarray:
        """``[W]`` per-report scalar (step, lr, loss, weight_decay, interval, val_loss)."""
        return self._scal[name][self.head:self.head + self.length]

    def steps(self) -> tuple[int, int]:
        s = self.scalar("step")
        return (int(s[0]) if math.isfinite(s[0]) else -1, int(s[-1]) if math.isfinite(s[-1]) else -1)

    def columns(self, idx: np.ndarray) -> "ColumnWindow":
        """The window restricted to groups ``idx`` (sorted, unique int indices), valid until
        the next :meth:`push`. Cost: nothing now; ``O(W m)`` per field read."""
        return ColumnWindow(self, np.asarray(idx, dtype=np.int64))

    def reset_groups(self, mask: np.ndarray) -> None:
        """Forget the history of groups in ``mask`` (after a restore)."""
        self.memo = {}
        for ring in self._ratio.values():
            ring[:, mask] = np.nan
        for f in WINDOW_FIELDS:
            self._buf[f][:, mask] = np.nan

    def state_dict(self) -> dict[str, Any]:
        from lyactl.control.decision_log import encode_array  # one JSON encoding for the package

        return {"n_groups": self.n_groups, "length": self.length, "curv_factor": self.curv_factor,
                "head": self.head, "count": self.count, "peak_w_sq": encode_array(self.peak_w_sq),
                "buf": {f: encode_array(self.field(f)) for f in WINDOW_FIELDS},
                "scal": {s: encode_array(self.scalar(s)) for s in _SCALARS}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        from lyactl.control.decision_log import decode_array

        if state["n_groups"] != self.n_groups or state["length"] != self.length:
            raise ShapeError(bad_arg("StatsWindow state", f"n_groups={self.n_groups}, length={self.length}",
                                     (state["n_groups"], state["length"])))
        self.head, self.count, self.memo, self._views = 0, int(state["count"]), {}, {}
        self.peak_w_sq = decode_array(state["peak_w_sq"])
        for f in WINDOW_FIELDS:
            ordered = decode_array(state["buf"][f]).reshape(self.length, self.n_groups)
            self._buf[f][: self.length], self._buf[f][self.length:] = ordered, ordered
        for s in _SCALARS:
            ordered = decode_array(state["scal"][s])
            self._scal[s][: self.length], self._scal[s][self.length:] = ordered, ordered
        self._ratio = {key: self._ring(*key) for key in self._ratio}


class ColumnWindow:
    """:class:`Window` over the groups ``idx`` of a :class:`StatsWindow` (``n_groups =
    len(idx)``, ``n_total`` the parent's). Fields are gathered on first read and cached;
    every number equals the parent's in those columns (``max_ratio`` recomputes the same
    quotient of the same operands), so a monitor gives the same margins on a subset as on
    the full window, column by column. Valid until the parent's next push.
    """

    def __init__(self, parent: StatsWindow, idx: np.ndarray) -> None:
        self.parent, self.idx = parent, idx
        self.n_groups, self.n_total, self.length = int(idx.size), parent.n_total, parent.length
        self.peak_w_sq = parent.peak_w_sq[idx]
        self.memo: dict[Any, Any] = {}
        self._fields: dict[str, np.ndarray] = {}

    @property
    def full(self) -> bool:
        return self.parent.full

    def field(self, name: str) -> np.ndarray:
        """``[W, m]`` copy of the parent's field in these columns (one object per name)."""
        view = self._fields.get(name)
        if view is None:
            view = self._fields[name] = np.take(self.parent.field(name), self.idx, axis=1)
        return view

    def scalar(self, name: str) -> np.ndarray:
        return self.parent.scalar(name)

    def steps(self) -> tuple[int, int]:
        return self.parent.steps()

    def cached(self, key: Any, fn: Callable[[], Any]) -> Any:
        if key not in self.memo:
            self.memo[key] = fn()
        return self.memo[key]

    def max_ratio(self, f: str, lag: int) -> np.ndarray:
        """As :meth:`StatsWindow.max_ratio`, on these columns."""
        V = self.field(f)
        return self.cached(("max_ratio", f, lag), lambda: _window_max_ratio(V, lag))


def _window_max_ratio(V: np.ndarray, lag: int) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.max(V[lag:] / (V[:-lag] + TINY), axis=0)
