"""The light evaluation modules stay light: the ROS nodes and replay import them without matplotlib, the
training package or the synthetic world (checked in the source, and in a fresh interpreter)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import clip_seg3d_ros.evaluation

EVALUATION_DIR = Path(clip_seg3d_ros.evaluation.__file__).parent
LIGHT_MODULES = ["metrics", "summary", "colors", "stream"]
FORBIDDEN = ("matplotlib", "clip_seg3d_ros.training", "clip_seg3d_ros.synthetic")


def imported_modules(source: str, package: str = "clip_seg3d_ros.evaluation") -> set[str]:
    """Every module an ``import`` or ``from ... import`` names, at module level or inside functions.

    Relative imports are resolved against ``package``. ``from package import name`` also yields
    ``package.name``, because the name may be a submodule.
    """
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = parts[: len(parts) + 1 - node.level] if node.level else []  # level 1: the package itself
            module = ".".join([*base, *([node.module] if node.module else [])])
            modules.add(module)
            modules.update(f"{module}.{alias.name}" for alias in node.names)
    return modules


def forbidden_imports(source: str) -> list[str]:
    return sorted(
        module
        for module in imported_modules(source)
        if any(module == name or module.startswith(name + ".") for name in FORBIDDEN)
    )


def test_the_import_check_sees_module_and_function_level_and_relative_imports():
    source = "import os\ndef f():\n    from matplotlib import colors\n    import clip_seg3d_ros.training.trainer\n"
    assert forbidden_imports(source) == ["clip_seg3d_ros.training.trainer", "matplotlib", "matplotlib.colors"]
    assert forbidden_imports("from clip_seg3d_ros import synthetic") == ["clip_seg3d_ros.synthetic"]
    assert forbidden_imports("from ..training import trainer") == [
        "clip_seg3d_ros.training", "clip_seg3d_ros.training.trainer"]
    assert forbidden_imports("import numpy\nfrom .metrics import summarize\nfrom .. import checkpoint") == []


@pytest.mark.parametrize("name", LIGHT_MODULES)
def test_light_evaluation_modules_import_no_matplotlib_training_or_synthetic(name):
    assert forbidden_imports((EVALUATION_DIR / f"{name}.py").read_text()) == []


def test_importing_the_light_modules_loads_no_matplotlib():
    code = (
        "import clip_seg3d_ros.evaluation.stream, clip_seg3d_ros.evaluation.summary, "
        "clip_seg3d_ros.evaluation.colors, sys; print('matplotlib' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
