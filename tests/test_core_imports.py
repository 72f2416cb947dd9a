"""The core (every module under lyactl/) imports no backend: checked on the source, statically.

test_no_torch.py checks at run time that importing every module leaves torch unimported;
this walks every import statement, including those inside functions, which run time does
not reach.
"""

from __future__ import annotations

import ast
from pathlib import Path

import lyactl

BACKENDS = ("torch", "lyactl_torch", "lightning", "transformers")
CORE = Path(lyactl.__file__).parent


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "import_module":
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.append((node.lineno, arg.value))
    return found


def test_no_core_module_imports_a_backend():
    files = sorted(CORE.rglob("*.py"))
    assert len(files) > 30  # the walk really reached the sub-packages
    offenders = [f"{path.relative_to(CORE.parent)}:{line} imports {name}"
                 for path in files for line, name in _imported_modules(path)
                 if name.split(".")[0] in BACKENDS]
    assert offenders == []


def test_the_walker_sees_imports_inside_functions(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from lyactl_torch.demo import run_demo\n    import torch.nn\n")
    assert [name for _, name in _imported_modules(src)] == ["lyactl_torch.demo", "torch.nn"]
