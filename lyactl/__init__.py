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
from .systems import LinearSystem, NumericSystem, SymbolicSystem
from .optimizers import OptimizerModel, OptimizerParams, adam, gd, heavy_ball, nesterov
from .candidates import CallableCandidate, ExprCandidate, LyapunovCandidate, QuadraticCandidate, as_candidate
from .jury import jury_conditions, jury_numeric
from .lyapunov import delta_v, quadratic_decrease, verify_decrease, verify_dlyap
from .regions import Region, derive_region
from .common_lyapunov import common_lyapunov, common_lyapunov_over_curvature

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
    # engine (systems, optimizer models, candidates, verification)
    "CallableCandidate",
    "ExprCandidate",
    "LinearSystem",
    "LyapunovCandidate",
    "NumericSystem",
    "OptimizerModel",
    "OptimizerParams",
    "QuadraticCandidate",
    "Region",
    "SymbolicSystem",
    "adam",
    "as_candidate",
    "common_lyapunov",
    "common_lyapunov_over_curvature",
    "delta_v",
    "derive_region",
    "gd",
    "heavy_ball",
    "jury_conditions",
    "jury_numeric",
    "nesterov",
    "quadratic_decrease",
    "verify_decrease",
    "verify_dlyap",
]
