"""Imports sit at the top of a module; one inside a function says why, on its line or the line above.

Why a test: an import inside a function hides a dependency and its cost from whoever reads the
module, and nothing stops such imports from piling up. A function-level import is kept only for
an optional dependency (a setup.py extra other than `core`: "# optional: pip install .[bags]") or
for a start-up cost measured with `python -X importtime` that a command should not pay before it
needs the module ("# torch: +2.2 s ..."). This test walks the AST of every module under mtan_ros/
and fails on a function-level import without such a comment. A bare `# noqa` is not a reason.
"""
from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mtan_ros"

# Still to be converted (their function-level imports are not checked yet): remove a name from this
# list once every import inside a function there is at the top of its module or says why it is not.
EXEMPT = (
)

_DIRECTIVE_ONLY = re.compile(r"#\s*(noqa\b[\s:\w,]*|type:\s*ignore\S*|pragma:[^#]*)\s*$")


def _reasons(source: str) -> dict[int, bool]:
    """Line number -> whether that line holds a comment that says something (not only a noqa/type directive)."""
    found: dict[int, bool] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            line = token.start[0]
            found[line] = found.get(line, False) or not _DIRECTIVE_ONLY.match(token.string)
    return found


def _function_imports(tree: ast.AST) -> list[ast.stmt]:
    """Import statements anywhere inside a function or method (nested classes and functions included)."""
    found: list[ast.stmt] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if in_function and isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append(child)
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return found


def unexplained_imports(source: str) -> list[int]:
    """Line numbers of the function-level imports in `source` with no comment on their lines or just above."""
    lines = source.splitlines()
    reasons = _reasons(source)
    missing = []
    for node in _function_imports(ast.parse(source)):
        own = any(reasons.get(n) for n in range(node.lineno, (node.end_lineno or node.lineno) + 1))
        above = node.lineno >= 2 and lines[node.lineno - 2].lstrip().startswith("#") and reasons.get(node.lineno - 1)
        if not (own or above):
            missing.append(node.lineno)
    return missing


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _exempt(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in EXEMPT)


def test_imports_inside_functions_say_why():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if _exempt(_module_name(path)):
            continue
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        for line in unexplained_imports(source):
            problems.append(f"{path.relative_to(ROOT)}:{line}: {lines[line - 1].strip()}")
    assert not problems, (
        f"{len(problems)} imports inside functions without a reason; move them to the top of the module, or say "
        "beside them why not (optional: which extra; or the start-up cost measured with -X importtime):\n"
        + "\n".join(problems))


def test_the_exempt_names_are_modules_of_the_package():
    for name in EXEMPT:
        path = ROOT.joinpath(*name.split("."))
        assert path.is_dir() or path.with_suffix(".py").is_file(), f"EXEMPT names {name}, which does not exist"


def test_the_check_sees_what_it_should():
    source = (
        "import os\n"
        "try:\n"
        "    import simplejpeg\n"
        "except ImportError:\n"
        "    simplejpeg = None\n"
        "\n"
        "def plain():\n"
        "    import json\n"                                    # 8: no reason
        "    import yaml  # core: cheap, moved soon\n"
        "    # optional: pip install .[bags]\n"
        "    from mcap.reader import (\n"
        "        SeekingReader,\n"
        "    )\n"
        "    import cv2  # noqa: F401\n"                       # 14: a directive is not a reason
        "\n"
        "class Node:\n"
        "    def method(self):\n"
        "        def inner():\n"
        "            from mtan_ros.model import build_model\n"  # 19: nested, no reason
        "        return inner\n"
        "\n"
        "async def later():\n"
        "    import torch\n"                                   # 23: async, no reason
        "    import torch.nn  # torch: +2 s at start-up\n"
    )
    assert unexplained_imports(source) == [8, 14, 19, 23]
