"""Plugins translate between their platform and core: they import core's public API only.

Issue 13's rule: no plugin module imports `sam_core.tiling`, `sam_core.training` (fine-tuning
goes through `sam_core.finetuning`) or a private `_name` of core, and core imports no GUI."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLUGINS = ("napari_sam", "fiftyone_plugin")
FORBIDDEN_MODULES = ("sam_core.tiling", "sam_core.training")
GUI_MODULES = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "vispy")


def _imports(path: Path):
    """(module, imported name or None, line) for every import in a Python file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                yield node.module, alias.name, node.lineno


@pytest.mark.parametrize("folder", PLUGINS)
def test_plugins_use_only_cores_public_api(folder):
    problems = []
    for path in sorted((REPO / folder).rglob("*.py")):
        for module, name, line in _imports(path):
            if not module.startswith("sam_core"):
                continue
            where = f"{path.relative_to(REPO)}:{line}"
            if any(module == m or module.startswith(m + ".") for m in FORBIDDEN_MODULES):
                problems.append(f"{where} imports {module}")
            private = [part for part in module.split(".") if part.startswith("_")]
            if private or (name is not None and name.startswith("_")):
                problems.append(f"{where} imports a private name: {module}.{name}")
    assert not problems, "\n".join(problems)


def test_core_imports_no_gui():
    problems = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for path in sorted((REPO / "core").rglob("*.py"))
        for module, _, line in _imports(path)
        if module.split(".")[0] in GUI_MODULES
    ]
    assert not problems, "\n".join(problems)
