"""How the Predictor runs a batch of several images: one forward pass, or one pass per image in parallel.

On a GPU one pass over the whole batch is the point of batching. On CPUs it is not
always faster: on a 2-core Zen 4 a width-0.25 model ran a batch of 3 at 128x256 in
one pass in 187-222 ms, three batch-1 passes one after the other in 188-214 ms, and
the same three passes on three threads at once in 148-163 ms (torch fp32, 2 intra-op
threads; the larger batch's activations leave the caches, and one pass leaves cores
idle between small operators). Which wins depends on the CPU, the model and the
backend, so `auto` times both on the CPU at hand and keeps the faster. What is
timed is the bare model: in the perception node on that CPU the parallel passes
competed with the node's own threads and answered no more frames, so the node
runs one pass unless told otherwise.
"""
from __future__ import annotations

import statistics
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

BATCH_MODES = ("auto", "one_pass", "parallel")
# Both modes compute the same outputs (up to fp32 summation order), so the faster one is kept when it is faster
# by more than the scatter of warm-up medians on a shared machine (a few per cent).
PARALLEL_MARGIN = 1.05


@dataclass
class BatchPlan:
    """The way batches run, why, and the timings behind it (empty when nothing was timed)."""

    mode: str
    reason: str
    batch_size: int = 1
    timings_ms: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.mode}: {self.reason}"


def static_plan(requested: str, batch_size: int, *, on_cuda: bool, compiled: bool) -> BatchPlan | None:
    """The plan where nothing needs timing; None for `auto` with batches of several images on the CPU."""
    requested = (requested or "auto").strip().lower()
    if requested not in BATCH_MODES:
        raise ValueError(f"batch_mode '{requested}' is not one of {', '.join(BATCH_MODES)}")
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    if requested == "parallel" and (on_cuda or compiled):
        where = "CUDA" if on_cuda else "a torch.compile'd model"
        raise ValueError(f"batch_mode parallel runs several passes at once, which {where} does not: "
                         f"use batch_mode auto or one_pass")
    if requested != "auto":
        return BatchPlan(requested, f"batch_mode={requested}", batch_size)
    if batch_size == 1:
        return BatchPlan("one_pass", "batches of one image", batch_size)
    if on_cuda:
        return BatchPlan("one_pass", "a GPU runs a batch in one pass", batch_size)
    if compiled:
        return BatchPlan("one_pass", "a torch.compile'd model runs one pass at a time", batch_size)
    return None


def choose_plan(batch_size: int, one_pass: Callable[[], Any], parallel: Callable[[], Any],
                time_calls: Callable[[dict[str, Callable[[], Any]]], dict[str, list[float]]]) -> BatchPlan:
    """Time a batch of `batch_size` both ways (interleaved, by `time_calls`) and keep the faster."""
    times = time_calls({"one_pass": one_pass, "parallel": parallel})
    medians = {name: statistics.median(values) for name, values in times.items()}
    speedup = medians["one_pass"] / medians["parallel"]
    measured = (f"a batch of {batch_size} ran {medians['one_pass']:.1f} ms in one pass and "
                f"{medians['parallel']:.1f} ms as {batch_size} passes at once ({len(times['one_pass'])} interleaved "
                f"runs)")
    if speedup >= PARALLEL_MARGIN:
        return BatchPlan("parallel", f"{measured}: {speedup:.2f}x faster in parallel", batch_size, medians)
    return BatchPlan("one_pass", f"{measured}: parallel is not {PARALLEL_MARGIN:.2f}x faster", batch_size, medians)


class ParallelPasses:
    """Runs a function once per item on its own thread, all at once; the results in the items' order.

    torch and ONNX Runtime release the GIL inside their kernels, so the passes
    really overlap; each thread uses torch's intra-op threads as set process-wide.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mtan-pass")

    def map(self, function: Callable[[Any], Any], items: list) -> list:
        return list(self._pool.map(function, items))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
