"""lyactl: Lyapunov-certified pruning and freezing of neural networks during training.

The core package is backend-agnostic (numpy, scipy, sympy, python-control) and never
imports torch; the PyTorch adapter lives in the separate package ``lyactl_torch``.
"""

from ._version import __version__
from .errors import (
    CheckpointError,
    DataFileError,
    InvalidArgumentError,
    LyactlError,
    NonFiniteError,
    ShapeError,
    UnresolvedSymbolError,
    UnsupportedModelError,
)
from .groups import Action, Certificate, Constraint, Decision, Event, Group, GroupKind, GroupStats
from .protocol import Backend
from .verdict import Evidence, Verdict

__all__ = [
    "__version__",
    "Action",
    "Backend",
    "Certificate",
    "CheckpointError",
    "Constraint",
    "DataFileError",
    "Decision",
    "Event",
    "Evidence",
    "Group",
    "GroupKind",
    "GroupStats",
    "InvalidArgumentError",
    "LyactlError",
    "NonFiniteError",
    "ShapeError",
    "UnresolvedSymbolError",
    "UnsupportedModelError",
    "Verdict",
]
