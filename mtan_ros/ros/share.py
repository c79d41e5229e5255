"""Where the package's installed files (config/, launch/) are, however it was installed.

One search for every caller: next to the sources (a checkout or an editable
install), the ament index (colcon), then `<sys.prefix>/share` (a plain pip install).
"""
from __future__ import annotations

import sys
from pathlib import Path

PACKAGE = "mtan_ros"


def candidates(relative: str | Path) -> list[Path]:
    """The places `relative` (e.g. config/perception.yaml) is looked for, in order."""
    paths = [Path(__file__).resolve().parents[2] / relative]
    try:
        from ament_index_python.packages import get_package_share_directory  # optional: only on a ROS installation

        paths.append(Path(get_package_share_directory(PACKAGE)) / relative)
    except Exception:  # not in an ament index (plain pip install), or ament_index_python absent
        pass
    paths.append(Path(sys.prefix) / "share" / PACKAGE / relative)
    return paths


def find(relative: str | Path) -> Path | None:
    """The first existing file among `candidates(relative)`, or None."""
    return next((path for path in candidates(relative) if path.is_file()), None)
