"""The verifier package imports only the standard library, PyNaCl and itself.

Auditors install ``verifier`` without the service's dependencies (DESIGN.md
§Layers), so every import statement in it is checked, not just the ones that run.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import verifier

PACKAGE = Path(verifier.__file__).resolve().parent
ALLOWED = {"nacl", "verifier"}


def _imports(path: Path) -> list[tuple[int, str]]:
    """Return (line, top-level module) for every absolute import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def test_package_has_modules() -> None:
    names = {p.name for p in PACKAGE.rglob("*.py")}
    assert {"__init__.py", "note.py", "checkpoint.py", "receipt.py", "cli.py"} <= names


def test_only_stdlib_nacl_and_self() -> None:
    bad = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: import {module}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line, module in _imports(path)
        if module not in sys.stdlib_module_names and module not in ALLOWED
    ]
    assert not bad, "verifier may import only the standard library and nacl:\n" + "\n".join(bad)


def test_checker_catches_a_forbidden_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import os\nfrom tlog import log\nimport starlette.app\nfrom . import x\n")
    modules = [m for _, m in _imports(sample)]
    assert modules == ["os", "tlog", "starlette"]
