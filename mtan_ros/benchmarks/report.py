"""One output schema for every benchmark and the GPU check: what ran, where, and the rows it measured.

Why shared: results from different scripts and machines end up side by side (in
issues, in docs/benchmarks.md, in a CI artefact); one envelope with the machine
description makes them comparable and lets one reader load any of them:

    {"schema": "mtan_ros.benchmark/1", "benchmark": "<name>", "machine": {...},
     "settings": {...}, "rows": [{...}, ...]}

Each row is a flat dict of the benchmark's own columns (numbers, strings, None).
"""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any, Optional

import torch

from mtan_ros.common.files import write_text
from mtan_ros.errors import ConfigError

SCHEMA = "mtan_ros.benchmark/1"
# CPU features that decide which precision and backend are fastest (docs/benchmarks.md).
_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_description() -> dict[str, Any]:
    """CPU model name, cores this process may use, and the flags that matter for inference speed."""
    model, flags = platform.processor() or "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": model, "cores": usable, "cpu_flags": [flag for flag in _FLAGS if flag in flags]}


def machine() -> dict[str, Any]:
    """Where a benchmark ran: CPU, GPU (if any), Python and torch versions."""
    info = {**cpu_description(), "python": platform.python_version(), "torch": torch.__version__,
            "cuda_build": torch.version.cuda}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1))
    return info


def write_json(path: str | os.PathLike, benchmark: str, rows: list[dict[str, Any]],
               settings: Optional[dict[str, Any]] = None, **extra: Any) -> Path:
    """The shared envelope around `rows`, written atomically to `path`."""
    document = {"schema": SCHEMA, "benchmark": benchmark, "machine": machine(), "settings": settings or {},
                "rows": rows, **extra}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return write_text(path, json.dumps(document, indent=2, default=str) + "\n")


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """A document written by `write_json`; ConfigError when it is not one."""
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read benchmark results {str(path)[:200]!r}: {exc}") from None
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        raise ConfigError(f"{str(path)[:200]!r} is not a benchmark result of schema {SCHEMA}")
    return document
