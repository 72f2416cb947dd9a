"""The README's "Use it in your loop" block, extracted verbatim, runs in a fresh process and
reports at least one certified decision (issue 17: the first hour)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MARK = "<!-- test-readme-loop: tests/test_readme_loop.py runs exactly the next code block -->"


def readme_loop() -> str:
    """The first ```python block after the marker in README.md, byte for byte."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text.count(MARK) == 1, "README.md lost the marker of its loop example"
    m = re.compile(r"```python\n(.*?)```", re.S).search(text, text.index(MARK))
    assert m is not None
    return m.group(1)


def test_the_block_is_complete_python():
    code = readme_loop()
    compile(code, "README.md", "exec")
    # nothing left for the reader to define: model, data and T are in the block
    for name in ("model", "optimizer", "T", "ctl"):
        assert re.search(rf"^{name} = ", code, re.M), name


def test_readme_loop_runs_and_decides(tmp_path):
    pytest.importorskip("torch")
    script = tmp_path / "readme_loop.py"
    script.write_text(readme_loop(), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "backends")]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    decisions = re.findall(r"^step (\d+): \[(.+)\]$", proc.stdout, re.M)
    assert decisions, proc.stdout  # at least one decision, printed as it happened
    summary = re.search(r"(\d+) events \((\d+) decisions", proc.stdout)
    assert summary and int(summary.group(1)) >= 1 and int(summary.group(2)) >= 1
    assert "Traceback" not in proc.stderr and "ScheduleWarning" not in proc.stderr
