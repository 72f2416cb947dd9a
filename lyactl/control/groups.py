"""Parameter groups, the statistics a backend reports on them, and the decisions taken.

This is the contract between the backend-agnostic core and an ML backend:

* a backend describes the model as a tuple of :class:`Group` (structural units with a
  kind, a cost and constraints) plus :class:`Constraint` objects;
* every K steps it reports one :class:`GroupStats` (arrays of shape ``[n_groups]``);
* the core answers with :class:`Event` objects, each a batch of :class:`Decision`
  (freeze / prune / restore a group), every decision carrying its :class:`Certificate`.

Everything here is a frozen value; arrays are numpy (never torch).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from lyactl.errors import InvalidArgumentError, NonFiniteError, ShapeError, bad_arg
from lyactl.verdict import Verdict

__all__ = [
    "GroupKind",
    "Group",
    "Constraint",
    "GroupStats",
    "Action",
    "Certificate",
    "Decision",
    "Event",
    "ACTIVE",
    "ADDITIVE_FIELDS",
    "FROZEN",
    "PRUNED",
    "REQUIRED_FIELDS",
    "STATS",
    "STAT_FIELDS",
    "StatField",
    "Status",
]


class GroupKind(enum.Enum):
    """The structural kind of a group (what physically goes when it is removed)."""

    HEAD = "head"                # attention head(s): one KV group under GQA
    MLP_BLOCK = "mlp_block"      # a block of MLP hidden neurons (multiple of 64)
    LAYER = "layer"              # a whole transformer block
    CHANNEL_BLOCK = "channel"    # a block of residual-stream (embedding) channels
    STATE_BLOCK = "state_block"  # a block of a state-space layer's state
    OTHER = "other"


@dataclass(frozen=True)
class Group:
    """One structural unit of the model.

    Attributes
    ----------
    name : str
        Unique, stable name, e.g. ``"blocks.3.attn.head.5"``.
    kind : GroupKind
    layer : int
        Index of the transformer block holding the group (-1 for model-wide groups).
    n_params : int
        Number of trainable parameters that belong to the group.
    flops_remove : float
        Training FLOPs per token saved by removing the group (forward + backward, 6N rule
        plus attention terms).
    flops_freeze : float
        Training FLOPs per token saved by freezing the group (its weight-gradient work;
        a frozen prefix of whole layers also skips the input-gradient work).
    units : int
        Width the group carries (neurons, heads, channels); 1 for a whole layer.
    """

    name: str
    kind: GroupKind
    layer: int
    n_params: int
    flops_remove: float
    flops_freeze: float
    units: int = 1

    def __post_init__(self) -> None:
        if not self.name:
            raise InvalidArgumentError(bad_arg("Group.name", "a non-empty string", self.name))
        for attr in ("n_params", "flops_remove", "flops_freeze", "units"):
            value = getattr(self, attr)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise InvalidArgumentError(bad_arg(f"Group.{attr}", "a finite number >= 0", value))


@dataclass(frozen=True)
class Constraint:
    """At least ``min_keep`` of ``members`` (group indices) must stay; ``together``
    groups go as one (e.g. query heads sharing a key/value group under GQA).

    ``uniform``: the members are split by their block (:attr:`Group.layer`) and every prune
    takes the same number from each block still present, so every block keeps one width
    (a standard config can express the result; :mod:`lyactl.control.selection`).
    """

    members: tuple[int, ...]
    min_keep: int = 0
    together: bool = False
    uniform: bool = False

    def __post_init__(self) -> None:
        if self.min_keep < 0 or self.min_keep > len(self.members):
            raise InvalidArgumentError(
                bad_arg("Constraint.min_keep", f"an int in [0, {len(self.members)}]", self.min_keep)
            )
        if self.uniform and self.together:
            raise InvalidArgumentError(bad_arg("Constraint.together", "False when uniform=True", self.together))


@dataclass(frozen=True)
class StatField:
    """One per-group statistic a backend reports (see :data:`STATS`).

    ``additive``: a sum over the group's elements (``sum_i a_i b_i``), so a backend may
    compute it in one fused scatter-add and shards of a parameter add up across ranks;
    ``required``: a decision needs it finite (the monitors read it on every group).
    """

    name: str
    meaning: str
    additive: bool = True
    required: bool = True


STATS: tuple[StatField, ...] = (
    StatField("w_sq", "||w_g||^2, squared norm of the group's weights now"),
    StatField("dw_sq", "||w_g(k) - w_g(k - K)||^2, squared displacement since the previous report"),
    StatField("g_sq", "||g_g||^2, squared norm of the last gradient (before clipping)"),
    StatField("gw", "g_g . w_g; the first-order Taylor estimate of the loss change from removing the group is -gw"),
    StatField("m_sq", "||m_g||^2 of the optimizer's first moment (exp_avg / momentum); NaN without one",
              required=False),
    StatField("curv", "curvature estimate along the group, w^T H w / ||w||^2 or a diagonal proxy; NaN where "
              "the backend provides none", additive=False, required=False),
    StatField("gdw", "g' . (w_g(k - K) - w_g(k - K - K')), the displacement of the interval BEFORE the previous "
              "report dotted with the first gradient taken after it (a fresh mini-batch at the path's end; "
              "lagged one report); NaN where the backend does not measure it", required=False),
)
"""The registry of per-group statistics, defined once: every producer (a backend's fused
reduction, the distributed synchronisation) and consumer (:class:`GroupStats`, the statistics
window, the monitors) reads the field list from here. Each is an array of shape
``[n_groups]`` (float64)."""

STAT_FIELDS: tuple[str, ...] = tuple(f.name for f in STATS)
ADDITIVE_FIELDS: tuple[str, ...] = tuple(f.name for f in STATS if f.additive)
REQUIRED_FIELDS: tuple[str, ...] = tuple(f.name for f in STATS if f.required)


@dataclass(frozen=True)
class GroupStats:
    """One report of per-group statistics (see :data:`STAT_FIELDS`).

    ``lr`` is the learning rate of the last step, ``weight_decay`` the decoupled
    weight-decay coefficient, ``interval`` the number of optimizer steps K since the
    previous report. Arrays are float64 of shape ``[n_groups]``. ``flops_per_token``, if
    the backend counts it, is the model's training FLOPs per token *now* (every event applied
    so far, frozen layers included); the controller's budget then uses it instead of summing
    its groups' nominal costs, which overlap (NaN: not counted).
    """

    step: int
    lr: float
    loss: float
    w_sq: np.ndarray
    dw_sq: np.ndarray
    g_sq: np.ndarray
    gw: np.ndarray
    m_sq: np.ndarray
    curv: np.ndarray
    interval: int = 1
    weight_decay: float = 0.0
    val_loss: float = math.nan
    flops_per_token: float = math.nan
    gdw: np.ndarray | None = None  # None: not measured (NaN, filled in below)

    def __post_init__(self) -> None:
        if self.gdw is None:
            object.__setattr__(self, "gdw", np.full(np.shape(self.w_sq), math.nan))

    @property
    def n_groups(self) -> int:
        return int(self.w_sq.shape[0])

    def validate(self, n_groups: int) -> None:
        """Raise :class:`ShapeError` unless every array has shape ``[n_groups]``.

        Non-finite values are allowed here (a monitor answers UNKNOWN on them); use
        :meth:`finite_mask` to see where they are.
        """
        for name in STAT_FIELDS:
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray) or arr.shape != (n_groups,):
                found = getattr(arr, "shape", type(arr).__name__)
                raise ShapeError(bad_arg(f"GroupStats.{name}", f"an array of shape ({n_groups},)", found))
        if self.interval < 1:
            raise InvalidArgumentError(bad_arg("GroupStats.interval", "an int >= 1", self.interval))

    def finite_mask(self) -> np.ndarray:
        """Boolean ``[n_groups]``: True where the required fields are all finite."""
        ok = np.ones(self.n_groups, dtype=bool)
        for name in REQUIRED_FIELDS:
            ok &= np.isfinite(getattr(self, name))
        return ok & bool(math.isfinite(self.loss) and math.isfinite(self.lr))

    def require_finite_scalars(self) -> None:
        """Raise :class:`NonFiniteError` if ``lr`` is not finite (loss may be NaN: hold)."""
        if not math.isfinite(self.lr):
            raise NonFiniteError(bad_arg("GroupStats.lr", "a finite learning rate", self.lr))


class Status(enum.IntEnum):
    """A group's state in the controller and in a :class:`~lyactl.control.protocol.FlopsModel`
    (int8 arrays of shape ``[n_groups]`` hold these values)."""

    ACTIVE = 0
    FROZEN = 1
    PRUNED = 2


ACTIVE, FROZEN, PRUNED = Status.ACTIVE, Status.FROZEN, Status.PRUNED


class Action(enum.Enum):
    """What the controller asks the backend to do with a group."""

    KEEP = "keep"
    FREEZE = "freeze"
    PRUNE = "prune"
    RESTORE = "restore"

    @property
    def status(self) -> Status:
        """The group's status once the action is carried out."""
        return {"freeze": FROZEN, "prune": PRUNED}.get(self.value, ACTIVE)


@dataclass(frozen=True)
class Certificate:
    """Why a decision was taken, in enough detail to re-verify it offline.

    ``monitor`` names the Lyapunov monitor; ``window`` is the (first, last) step of the
    statistics it used; ``numbers`` the values the condition was evaluated on;
    ``condition`` the inequality that had to hold (a string); ``margin`` how much room it
    had (positive = held); ``verdict`` the outcome.
    """

    monitor: str
    verdict: Verdict
    window: tuple[int, int]
    numbers: Mapping[str, float]
    condition: str
    margin: float

    def to_json(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "verdict": self.verdict.value,
            "window": list(self.window),
            "numbers": {k: (None if not math.isfinite(v) else float(v)) for k, v in self.numbers.items()},
            "condition": self.condition,
            "margin": float(self.margin) if math.isfinite(self.margin) else None,
        }


@dataclass(frozen=True)
class Decision:
    """One action on one group, with its certificates (all of which held)."""

    step: int
    group: str
    index: int
    action: Action
    certificates: tuple[Certificate, ...] = ()


@dataclass(frozen=True)
class Event:
    """A batch of decisions applied at once (one structural change = one recompilation)."""

    event_id: int
    step: int
    decisions: tuple[Decision, ...]
    flops_before: float = math.nan
    flops_after: float = math.nan
    meta: Mapping[str, Any] = field(default_factory=dict)
