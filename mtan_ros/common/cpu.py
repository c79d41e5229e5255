"""What the CPU can do, read from the kernel: the flags that decide reduced precision on a CPU.

Shared by inference (whether measuring bf16 is worthwhile), training (whether
--amp can use bf16) and the benchmarks (the machine they ran on). Having the
flags never decides a precision by itself: bf16 is chosen by measurement.
"""
from __future__ import annotations

from pathlib import Path

CPUINFO = "/proc/cpuinfo"
# CPU instructions for bf16 arithmetic: AMX tiles (Intel Sapphire Rapids and later), AVX-512 BF16 (also Zen 4).
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def read_cpu_flags(path: str | None = None) -> set[str]:
    """The CPU feature flags the kernel reports in `path` (default CPUINFO); empty where it is unreadable."""
    try:
        text = Path(path or CPUINFO).read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def cpu_bf16_flags() -> list[str]:
    """The bf16 instruction flags (BF16_FLAGS) this CPU reports, e.g. ["avx512_bf16"]; empty without any.

    Having them does not make bf16 faster (Intel without AMX: 0.43-0.9x of
    fp32 measured); it only makes measuring worthwhile.
    """
    flags = read_cpu_flags()
    return [flag for flag in BF16_FLAGS if flag in flags]
