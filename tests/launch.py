"""Launch a worker script of tests/ on several CPU processes (``torch.distributed.run``, gloo),
with this checkout and its backends on the path and one thread per process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["torchrun"]

HERE = Path(__file__).resolve().parent


def torchrun(*args: str | Path, ranks: int = 2, timeout: float = 180,
             cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``python [launcher] *args`` (a script and its arguments, or ``"-m", module, ...``)
    on ``ranks`` processes (``ranks=1``: a plain process, no launcher)."""
    env = dict(os.environ) | {"OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(HERE.parent), str(HERE.parent / "backends"), os.environ.get("PYTHONPATH", "")])}
    launch = ["-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc_per_node={ranks}"]
    cmd = [sys.executable, *(launch if ranks > 1 else []), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
