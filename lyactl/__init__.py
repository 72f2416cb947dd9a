"""lyactl: Lyapunov-certified pruning and freezing of neural networks during training.

The core package is backend-agnostic (numpy, scipy, sympy, python-control) and never
imports torch; the PyTorch adapter lives in the separate package ``lyactl_torch``.
"""

from typing import TYPE_CHECKING

from lyactl._lazy import lazy_getattr

from lyactl._version import __version__
from lyactl.errors import (
    CheckpointError,
    DataFileError,
    InvalidArgumentError,
    LyactlError,
    NonFiniteError,
    ShapeError,
    UnresolvedSymbolError,
    UnsupportedModelError,
)
from lyactl.control.groups import Action, Certificate, Constraint, Decision, Event, Group, GroupKind, GroupStats
from lyactl.control.protocol import Backend
from lyactl.verdict import Evidence, Verdict

if TYPE_CHECKING:  # the lazily imported engine names, for type checkers and IDEs
    from lyactl.analysis.candidates import CallableCandidate, ExprCandidate, LyapunovCandidate, QuadraticCandidate, as_candidate
    from lyactl.analysis.common_lyapunov import common_lyapunov, common_lyapunov_over_curvature
    from lyactl.analysis.jury import jury_conditions, jury_numeric
    from lyactl.analysis.lyapunov import delta_v, quadratic_decrease, verify_decrease, verify_dlyap
    from lyactl.analysis.optimizers import OptimizerModel, OptimizerParams, adam, gd, heavy_ball, nesterov
    from lyactl.analysis.regions import Region, derive_region
    from lyactl.analysis.systems import LinearSystem, NumericSystem, SymbolicSystem

# The engine (systems, optimizer models, candidates, verification) needs sympy, which takes
# about 0.4 s to import; a training loop that only runs the controller never needs it. Its
# names are therefore imported on first use (PEP 562), from the module each lives in.
_ENGINE = {
    "analysis.systems": ("LinearSystem", "NumericSystem", "SymbolicSystem"),
    "analysis.optimizers": ("OptimizerModel", "OptimizerParams", "adam", "gd", "heavy_ball", "nesterov"),
    "analysis.candidates": ("CallableCandidate", "ExprCandidate", "LyapunovCandidate", "QuadraticCandidate", "as_candidate"),
    "analysis.jury": ("jury_conditions", "jury_numeric"),
    "analysis.lyapunov": ("delta_v", "quadratic_decrease", "verify_decrease", "verify_dlyap"),
    "analysis.regions": ("Region", "derive_region"),
    "analysis.common_lyapunov": ("common_lyapunov", "common_lyapunov_over_curvature"),
}


__getattr__ = lazy_getattr("lyactl", _ENGINE, globals())


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


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
