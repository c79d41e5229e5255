"""The ament linters `colcon test` runs, with this project's configuration."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["mtan_ros", "launch", "test", "setup.py"]
# Docstring conventions this project does not follow: summary on the second
# line, imperative mood, trailing punctuation and section formatting.
PEP257_IGNORE = ["D205", "D209", "D213", "D400", "D401", "D402", "D403", "D406", "D407", "D413", "D415"]


@pytest.mark.slow
@pytest.mark.linter
def test_flake8(monkeypatch):
    main = pytest.importorskip("ament_flake8.main", reason="ament_flake8 is not installed (`pip install '.[lint]'`)")
    pytest.importorskip("flake8_quotes", reason="the flake8 plugins ament_flake8 uses are not installed")
    monkeypatch.chdir(ROOT)
    rc, errors = main.main_with_errors(argv=["--config", str(ROOT / "test" / "flake8.ini"), *SOURCES])
    assert rc == 0, f"{len(errors)} flake8 problems:\n" + "\n".join(errors[:40])


@pytest.mark.slow
@pytest.mark.linter
def test_pep257(monkeypatch):
    main = pytest.importorskip("ament_pep257.main", reason="ament_pep257 is not installed (`pip install '.[lint]'`)")
    monkeypatch.chdir(ROOT)
    assert main.main(argv=["--add-ignore", *PEP257_IGNORE, *SOURCES]) == 0, "docstring problems (see output)"


def test_library_modules_import_without_rclpy():
    """Every layer below mtan_ros.ros imports in a process where rclpy cannot be found.

    The import-linter contract (test_layers.py) forbids the imports; this shows the modules really load.
    """
    import subprocess
    import sys

    code = ("import sys; sys.modules['rclpy'] = None\n"
            "import mtan_ros.model, mtan_ros.data, mtan_ros.training, mtan_ros.inference, mtan_ros.bags\n"
            "import mtan_ros.evaluation.replay, mtan_ros.imaging.compressed, mtan_ros.pipeline.input_monitor\n"
            "import mtan_ros.common.entry, mtan_ros.model.checkpoint\n"
            "import mtan_ros.inference.predictor, mtan_ros.training.trainer\n"
            "print('ok')")
    env = dict(os.environ)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
