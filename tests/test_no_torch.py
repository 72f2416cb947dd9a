"""The core package never imports torch, not even through a submodule."""

import subprocess
import sys

CODE = """
import importlib, pkgutil, sys
import lyactl
names = [m.name for m in pkgutil.walk_packages(lyactl.__path__, 'lyactl.') if m.name != 'lyactl.__main__']
for name in names:
    importlib.import_module(name)
print(len(names))
assert 'torch' not in sys.modules, [m for m in sys.modules if m.startswith('torch')][:5]
"""


def test_importing_every_lyactl_module_leaves_torch_unimported():
    proc = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert int(proc.stdout.strip().splitlines()[-1]) >= 8  # it really imported the submodules
