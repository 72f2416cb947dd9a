"""Run logging: Python ``logging`` (logger ``"lyactl"``), TensorBoard scalars when
``tensorboard`` is importable, and always the plain record (``metrics.jsonl``, then
``metrics.csv``) in the run folder.

TensorBoard is imported lazily in :func:`tensorboard_writer` and only there; without it the
run goes on with the plain record alone (one info line says so).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Any, Mapping

__all__ = ["LOGGER", "tensorboard_writer", "MetricsLog", "write_csv"]

LOGGER = logging.getLogger("lyactl")


def tensorboard_writer(log_dir: Path) -> Any | None:
    """A ``torch.utils.tensorboard.SummaryWriter`` on ``log_dir``, or None when the
    ``tensorboard`` package is not installed (the one place it is imported)."""
    try:
        import tensorboard  # noqa: F401  (SummaryWriter needs it; None in sys.modules -> ImportError)
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        LOGGER.info("tensorboard not installed: scalars go to metrics.jsonl/csv only")
        return None
    return SummaryWriter(log_dir=str(log_dir))


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class MetricsLog:
    """Append-only metric rows: one JSON line per :meth:`log` in ``path`` and, when available,
    one TensorBoard scalar per numeric field under the tag ``<arm>/<field>``."""

    def __init__(self, path: Path, tensorboard_dir: Path | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tb = tensorboard_writer(tensorboard_dir) if tensorboard_dir is not None else None

    def log(self, row: Mapping[str, Any]) -> None:
        """Write ``row`` (needs ``arm`` and ``step``)."""
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({k: _clean(v) for k, v in row.items()}, allow_nan=False) + "\n")
        if self.tb is not None:
            for k, v in row.items():
                if k not in ("arm", "step") and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tb.add_scalar(f"{row['arm']}/{k}", v, int(row["step"]))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def write_csv(rows: list[Mapping[str, Any]], path: Path) -> None:
    """The rows as CSV, columns in first-seen order (missing values empty)."""
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
