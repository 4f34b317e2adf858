"""jobs -> training -> udfs: each package imports only the ones below it (no circles), read from the
source's own import statements (top level and inside functions alike)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ORDER = ("jobs", "training", "udfs")  # each may import the ones after it, never the ones before


def imported_packages(path: Path) -> set[tuple[str, int]]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {(a.name.split(".")[0], node.lineno) for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add((node.module.split(".")[0], node.lineno))
    return found


@pytest.mark.parametrize("package", ORDER)
def test_imports_go_strictly_downward(package):
    above = set(ORDER[:ORDER.index(package)])
    bad = [f"{p.relative_to(ROOT)}:{line} imports {mod}" for p in sorted((ROOT / package).rglob("*.py"))
           for mod, line in imported_packages(p) if mod in above]
    assert not bad, "\n".join(bad)


def test_the_checker_sees_an_upward_import(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from jobs.config import config_hash\n")
    assert ("jobs", 2) in imported_packages(f)
