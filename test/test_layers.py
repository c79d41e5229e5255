"""The package's layering, as setup.cfg's import-linter contracts state it.

Why a test: the layers (errors < common < model, data < evaluation < training,
inference < bags < ros < benchmarks, demo) hold only while something checks them,
counting imports inside functions; a violation names the import and its line.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports() -> str:
    exe = Path(sys.executable).with_name("lint-imports")
    found = str(exe) if exe.exists() else shutil.which("lint-imports")
    if found is None:
        pytest.skip("import-linter is not installed (pip install import-linter, or `make test`)")
    return found


def test_layer_contracts_are_kept():
    result = subprocess.run([_lint_imports(), "--config", str(ROOT / "setup.cfg")], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "2 kept, 0 broken" in result.stdout


def test_the_contract_catches_an_upward_import_inside_a_function(tmp_path):
    """A copy of the package with one model module importing training inside a function breaks the contract."""
    copy = tmp_path / "src"
    shutil.copytree(ROOT / "mtan_ros", copy / "mtan_ros", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "setup.cfg", copy / "setup.cfg")
    with open(copy / "mtan_ros" / "model" / "tasks.py", "a") as f:
        f.write("\n\ndef _upward():\n    import mtan_ros.training.trainer  # noqa: F401\n")
    result = subprocess.run([_lint_imports(), "--config", str(copy / "setup.cfg")], cwd=copy,
                            capture_output=True, text=True, timeout=300,
                            env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"})
    assert result.returncode != 0
    assert "mtan_ros.model.tasks -> mtan_ros.training.trainer" in result.stdout
