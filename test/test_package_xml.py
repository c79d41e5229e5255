"""package.xml declares every package the code imports.

Why a test: `rosdep install` and the ROS build farm know only what package.xml
declares. An import of a ROS package that is not declared (for example a
`lifecycle_msgs` service client) works on a development machine that has the
whole ROS desktop and fails on a robot with a minimal install. This test walks
the AST of every module in mtan_ros/ and launch/ (imports inside functions
included) and of test/, and checks:

- each ROS package imported (rclpy, *_msgs, *_srvs, *_interfaces, launch*,
  ament_*, rosbag2_py, cv_bridge, ...) is declared: as <exec_depend> or
  <depend> for mtan_ros/ and launch/, and also <test_depend> for test/;
- each other third-party module either maps to a rosdep key that is declared
  (numpy -> python3-numpy, ...), or is one of the few that no rosdep key covers,
  which are installed with pip and must therefore be in setup.py's extras;
- a module in neither map fails the test until someone decides which it is.
"""
from __future__ import annotations

import ast
import functools
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_DIRS = ("mtan_ros", "launch")
TEST_DIRS = ("test",)

# ROS packages whose names do not follow one of the patterns in `is_ros_package`.
ROS_PACKAGES = {
    "rclpy", "launch", "launch_ros", "rosbag2_py", "ros2bag", "cv_bridge", "image_transport",
    "message_filters", "tf2_ros", "tf2_py", "rosidl_runtime_py", "rpyutils", "rosbag2_storage_mcap",
}
ROS_SUFFIXES = ("_msgs", "_srvs", "_interfaces")
ROS_PREFIXES = ("launch_testing", "launch_ros", "ament_", "rosbag2_", "rclpy_")

# Python modules with a rosdep key (rosdistro's rosdep/python.yaml), as package.xml must name them.
ROSDEP_KEYS = {
    "numpy": "python3-numpy",
    "cv2": "python3-opencv",
    "yaml": "python3-yaml",
    "torch": "python3-torch",
    "tqdm": "python3-tqdm",
    "matplotlib": "python3-matplotlib",
    "pytest": "python3-pytest",
}

# Modules no system package covers: installed with pip, so setup.py's extras must bring them.
# module -> the distribution (in an extra of setup.py) that installs it.
PIP_ONLY = {
    "rosbags": "rosbags",
    "mcap": "mcap",
    "mcap_ros2": "mcap-ros2-support",
    "zstandard": "mcap",  # a dependency of mcap; reads zstd-compressed mcap chunks
    "apsw": "rosbags",  # a dependency of rosbags; reads sqlite3 bags strictly
    "simplejpeg": "simplejpeg",
    "onnx": "onnx",
    "onnxscript": "onnxscript",
    "onnxruntime": "onnxruntime",
    "cityscapesscripts": "cityscapesscripts",
}
# Modules that come with a vendor's stack, not from a registry; imported only to check for them.
VENDOR_ONLY = {
    "tensorrt": "NVIDIA TensorRT; `python -m mtan_ros.benchmarks.gpu_check` skips its row without it",
}


def is_ros_package(module: str) -> bool:
    return module in ROS_PACKAGES or module.endswith(ROS_SUFFIXES) or module.startswith(ROS_PREFIXES)


@functools.lru_cache(maxsize=None)
def _scan(dirs: tuple[str, ...]) -> tuple[tuple[str, frozenset[str]], ...]:
    return tuple((name, frozenset(files)) for name, files in _top_level_imports(dirs).items())


def top_level_imports(dirs: tuple[str, ...]) -> dict[str, set[str]]:
    """Top-level module name -> the files that import it (the tree is parsed once per folder set)."""
    return {name: set(files) for name, files in _scan(tuple(dirs))}


def _top_level_imports(dirs: tuple[str, ...]) -> dict[str, set[str]]:
    """Top-level module name -> the files (relative to ROOT) that import it, absolute imports only."""
    found: dict[str, set[str]] = {}
    for folder in dirs:
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def local_modules(dirs: tuple[str, ...]) -> set[str]:
    """Names importable from the package itself and from the folders' own helper modules."""
    names = {"mtan_ros"}
    for folder in dirs:
        names |= {path.stem for path in (ROOT / folder).glob("*.py")}
    return names


def third_party(dirs: tuple[str, ...]) -> dict[str, set[str]]:
    local = local_modules(dirs)
    return {name: files for name, files in top_level_imports(dirs).items()
            if name not in sys.stdlib_module_names and name not in local}


def declared(*tags: str) -> set[str]:
    root = ET.parse(ROOT / "package.xml").getroot()
    return {element.text.strip() for tag in tags for element in root.findall(tag) if element.text}


def setup_extras_distributions() -> set[str]:
    """Distribution names in setup.py's EXTRAS literal, without version specifiers."""
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "EXTRAS" for t in node.targets):
            extras = ast.literal_eval(node.value)
            break
    else:
        raise AssertionError("setup.py has no EXTRAS = {...} literal")
    names = set()
    for requirements in extras.values():
        for requirement in requirements:
            name = requirement
            for stop in "<>=!~[; ":
                name = name.split(stop)[0]
            names.add(name.lower())
    return names


def missing(dirs: tuple[str, ...], allowed: set[str]) -> list[str]:
    """One line per imported package (ROS, or with a rosdep key) that package.xml lacks."""
    problems = []
    for module, files in sorted(third_party(dirs).items()):
        key = module if is_ros_package(module) else ROSDEP_KEYS.get(module)
        if key is not None and key not in allowed:
            problems.append(f"{key} (imported as '{module}' in {', '.join(sorted(files))})")
    return problems


def test_the_scan_finds_imports_inside_functions():
    """The ROS-free layers import optional packages lazily; those imports must be seen too."""
    imports = third_party(RUNTIME_DIRS)
    assert "mtan_ros/ros/lifecycle_client.py" in imports["lifecycle_msgs"]
    assert "mtan_ros/inference/backends.py" in imports["onnxruntime"]  # inside a function
    assert {"launch", "launch_ros"} <= set(top_level_imports(("launch",)))


def test_an_undeclared_package_is_reported():
    allowed = declared("exec_depend", "depend") - {"rclpy", "python3-numpy"}
    problems = " ".join(missing(RUNTIME_DIRS, allowed))
    assert "rclpy (imported as 'rclpy'" in problems
    assert "python3-numpy (imported as 'numpy'" in problems


def test_runtime_imports_are_exec_dependencies():
    problems = missing(RUNTIME_DIRS, declared("exec_depend", "depend"))
    assert not problems, "package.xml lacks <exec_depend> for:\n  " + "\n  ".join(problems)


def test_test_imports_are_declared():
    problems = missing(TEST_DIRS, declared("exec_depend", "depend", "test_depend"))
    assert not problems, "package.xml lacks <test_depend> (or <exec_depend>) for:\n  " + "\n  ".join(problems)


def test_every_third_party_import_is_classified():
    """A module that is neither ROS, nor a rosdep key, nor pip- or vendor-only needs a decision here."""
    unknown = sorted(name for name in third_party(RUNTIME_DIRS + TEST_DIRS)
                     if not is_ros_package(name) and name not in ROSDEP_KEYS
                     and name not in PIP_ONLY and name not in VENDOR_ONLY)
    assert not unknown, ("imported but not classified in test/test_package_xml.py (ROSDEP_KEYS, PIP_ONLY or "
                         f"VENDOR_ONLY): {unknown}")


def test_pip_only_modules_come_with_setup_py_extras():
    distributions = setup_extras_distributions()
    used = set(third_party(RUNTIME_DIRS + TEST_DIRS))
    absent = sorted(f"{module} (from {dist})" for module, dist in PIP_ONLY.items()
                    if module in used and dist.lower() not in distributions)
    assert not absent, f"installed with pip but in no extra of setup.py: {absent}"


def test_declared_python_keys_are_used():
    """A python3-* key nothing imports any more is stale."""
    used = {ROSDEP_KEYS[name] for name in third_party(RUNTIME_DIRS + TEST_DIRS) if name in ROSDEP_KEYS}
    stale = sorted(key for key in declared("exec_depend", "depend", "test_depend")
                   if key.startswith("python3-") and key not in used)
    assert not stale, f"package.xml declares python keys no module imports: {stale}"
