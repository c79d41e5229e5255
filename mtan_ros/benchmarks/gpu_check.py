"""What this package does on this machine's GPU, in one table (a few minutes).

    python -m mtan_ros.benchmarks.gpu_check [--json gpu_check.json] [--checkpoint best.pt] [--quick]
    make gpu-check

Rows: the Predictor at fp32 / fp16 / bf16, compiled, and through ONNX Runtime's
CUDA and TensorRT providers (where installed), at 128x256 and 256x512, batch 1
and 4 (latency per batch, images per second, labels equal to fp32); one node
serving several cameras as the multi-camera node runs them (batch 1 against one
batch of 4 at 256x512, the node's automatic precision); the
perception node end to end at 1024x2048 through DDS on the GPU at camera and
model output resolution (`mtan_ros.benchmarks.node` as a subprocess); one
mixed-precision (AMP) training step; one NCCL DistributedDataParallel step in a
single process. A CPU fp32 row per size gives the scale.

Every row that needs CUDA is skipped with its reason where there is none, so
the check runs anywhere. Expensive rows (compiling, TensorRT engines) come
last and are skipped once the time budget (--budget-s) is spent. Without
--checkpoint the models have random weights: latency holds, label agreement
only shows that a path computes the same thing as fp32.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist

from mtan_ros.benchmarks.report import read_json, write_json
from mtan_ros.common.entry import run_command
from mtan_ros.benchmarks.inference import calibrated_random_model, random_meta, street_images
from mtan_ros.inference.backends import onnxruntime_providers
from mtan_ros.inference.precision import cpu_bf16_flags
from mtan_ros.inference.predictor import Predictor
from mtan_ros.model.checkpoint import build_model_from_checkpoint, load_checkpoint
from mtan_ros.training.config import TrainConfig
from mtan_ros.training.distributed import DistContext
from mtan_ros.training.epoch import train_step
from mtan_ros.training.evaluate import to_device
from mtan_ros.training.run import build_parts

CUDA_PROVIDERS = ["CUDAExecutionProvider", "CPUExecutionProvider"]
TENSORRT_PROVIDERS = ["TensorrtExecutionProvider", *CUDA_PROVIDERS]
NODE_TIMEOUT_S = 300


@dataclass
class Row:
    check: str
    setting: str
    status: str = "ok"  # ok | skipped | failed
    result: str = ""
    note: str = ""
    needs_cuda: bool = True
    values: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    """Sizes and counts: the full check, or tiny ones (--quick) for a smoke test."""

    sizes: list[tuple[int, int]]
    batches: list[int]
    width: float
    warmup: int
    iters: int
    train_batch: int


FULL = Plan(sizes=[(128, 256), (256, 512)], batches=[1, 4], width=1.0, warmup=3, iters=20, train_batch=8)
QUICK = Plan(sizes=[(64, 128)], batches=[1, 2], width=0.125, warmup=1, iters=2, train_batch=2)


def cuda_missing() -> str | None:
    """Why CUDA rows cannot run here, or None."""
    if torch.version.cuda is None:
        return f"CUDA not available (torch {torch.__version__} is a CPU-only build)"
    if not torch.cuda.is_available():
        return f"CUDA not available (torch {torch.__version__} built for CUDA {torch.version.cuda}, no usable GPU)"
    return None


def environment() -> dict[str, Any]:
    info: dict[str, Any] = {"torch": torch.__version__, "cuda_build": torch.version.cuda, "cpus": os.cpu_count(),
                            "cpu_bf16_flags": cpu_bf16_flags(), "onnxruntime_providers": onnxruntime_providers()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    capability=f"{props.major}.{props.minor}", cudnn=torch.backends.cudnn.version(),
                    nccl=torch.distributed.is_available() and torch.distributed.is_nccl_available())
    try:
        import tensorrt  # optional: only where TensorRT is installed

        info["tensorrt"] = tensorrt.__version__
    except ImportError:
        info["tensorrt"] = None
    return info


class GpuCheck:
    """Runs the rows in order of cost and collects them."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.plan = QUICK if args.quick else FULL
        self.deadline = time.monotonic() + args.budget_s
        self.no_cuda = cuda_missing()
        self.rows: list[Row] = []
        self._models: dict[tuple[int, int], tuple[Any, torch.nn.Module]] = {}
        self._references: dict[tuple, tuple[list[np.ndarray], list[np.ndarray]]] = {}

    # --- bookkeeping ---------------------------------------------------------------------------
    def add(self, row: Row) -> Row:
        self.rows.append(row)
        mark = {"ok": "", "skipped": " (skipped)", "failed": " (FAILED)"}[row.status]
        print(f"  {row.check} | {row.setting}{mark}: {row.result or row.note}", flush=True)
        return row

    def guarded(self, check: str, setting: str, body: Callable[[], Row | list[Row]], *, needs_cuda: bool = True,
                reserve_s: float = 0.0) -> None:
        """Run one check (one or more rows); a missing device, a spent budget or an exception becomes the reason."""
        if needs_cuda and self.no_cuda:
            self.add(Row(check, setting, "skipped", note=self.no_cuda, needs_cuda=needs_cuda))
            return
        if time.monotonic() + reserve_s > self.deadline:
            self.add(Row(check, setting, "skipped", note=f"time budget of {self.args.budget_s:.0f} s used up",
                         needs_cuda=needs_cuda))
            return
        try:
            rows = body()
        except Exception as exc:  # the check reports every failure as a row instead of stopping
            text = str(exc).strip().splitlines()
            rows = Row(check, setting, "failed", note=f"{type(exc).__name__}: {text[0][:200] if text else ''}")
        for row in rows if isinstance(rows, list) else [rows]:
            row.check, row.setting, row.needs_cuda = row.check or check, row.setting or setting, needs_cuda
            self.add(row)

    def model_for(self, size: tuple[int, int]):
        """(meta, model) for an input size: the checkpoint's, or random weights calibrated on street scenes."""
        if size not in self._models:
            if self.args.checkpoint:
                ckpt = load_checkpoint(self.args.checkpoint)
                self._models[size] = (ckpt.meta, build_model_from_checkpoint(ckpt))
            else:
                meta = random_meta(size, self.plan.width, 7)
                self._models[size] = (meta, calibrated_random_model(meta, street_images(size, 4, seed=2)))
        return self._models[size]

    def sizes(self) -> list[tuple[int, int]]:
        if self.args.checkpoint:
            return [tuple(load_checkpoint(self.args.checkpoint).meta.input_size)]
        return self.plan.sizes

    # --- rows ----------------------------------------------------------------------------------
    def predictor_rows(self, name: str, device: str, options: dict[str, Any], *, needs_cuda: bool = True,
                       batches: list[int] | None = None, reserve_s: float = 0.0) -> None:
        """One Predictor per input size (exporting or compiling once), timed at each batch size."""
        batches = batches or self.plan.batches
        for size in self.sizes():
            setting = f"{size[0]}x{size[1]} batch {','.join(map(str, batches))}"
            self.guarded(name, setting, lambda: self._time_predictor(size, batches, device, options),
                         needs_cuda=needs_cuda, reserve_s=reserve_s)

    def _time_predictor(self, size: tuple[int, int], batches: list[int], device: str,
                        options: dict[str, Any]) -> list[Row]:
        meta, model = self.model_for(size)
        predictor = Predictor(copy.deepcopy(model), meta, device=device, **options)
        rows = []
        try:
            for batch in batches:
                images, reference = self._inputs(size, batch, device)
                for _ in range(self.plan.warmup):
                    predictor.predict_batch(images)
                times = []
                for _ in range(self.plan.iters):
                    start = time.perf_counter()
                    results = predictor.predict_batch(images)
                    times.append((time.perf_counter() - start) * 1e3)
                equal = float(np.mean([(r.labels == ref).mean() for r, ref in zip(results, reference)]))
                ms = statistics.median(times)
                rows.append(Row("", f"{size[0]}x{size[1]} batch {batch}",
                                result=f"{ms:.2f} ms/batch, {batch * 1e3 / ms:.0f} img/s, labels = fp32 {equal:.2%}",
                                note=f"ran as {predictor.backend} {predictor.precision}",
                                values={"ms_per_batch_p50": ms, "images_per_s": batch * 1e3 / ms,
                                        "labels_equal_fp32": equal}))
        finally:
            predictor.close()
        return rows

    def _inputs(self, size: tuple[int, int], batch: int, device: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Street images at the model's size and the labels fp32 eager gives them on `device` (computed once)."""
        key = (size, batch, device)
        if key not in self._references:
            images = street_images(size, batch, seed=11)
            meta, model = self.model_for(size)
            reference = Predictor(copy.deepcopy(model), meta, device=device, precision="fp32")
            self._references[key] = (images, [r.labels for r in reference.predict_batch(images)])
            reference.close()
        return self._references[key]

    def batched_row(self) -> None:
        """What batching several cameras buys: images per second at batch 1 and at batch N, one model."""
        size = self.sizes()[-1]
        count = max(self.plan.batches)
        self.guarded("Predictor batched cameras", f"{size[0]}x{size[1]} precision auto, batch 1 vs {count}",
                     lambda: self._batched(size, count), reserve_s=30)

    def _batched(self, size: tuple[int, int], count: int) -> Row:
        single, batched = self._time_predictor(size, [1, count], "cuda", {"precision": "auto"})
        one, many = single.values["images_per_s"], batched.values["images_per_s"]
        return Row("", "", result=f"batch {count}: {batched.values['ms_per_batch_p50']:.2f} ms, {many:.0f} img/s; "
                                  f"batch 1: {single.values['ms_per_batch_p50']:.2f} ms, {one:.0f} img/s; "
                                  f"{many / one:.2f}x the images per second",
                   note=single.note, values={"batch": count, "images_per_s_batch_1": one,
                                             f"images_per_s_batch_{count}": many, "speedup": many / one})

    def node_rows(self) -> None:
        """The node end to end through DDS, at both output resolutions, via the node benchmark."""
        self.guarded("node end-to-end", "1024x2048 camera, output camera and model", self._run_node_benchmark,
                     reserve_s=60)

    def _run_node_benchmark(self) -> list[Row]:
        with tempfile.TemporaryDirectory(prefix="mtan_gpu_check_") as folder:
            path = Path(folder) / "node.json"
            command = [sys.executable, "-m", "mtan_ros.benchmarks.node", "--device", "cuda", "--sizes",
                       "1024x2048", "--output-resolution", "camera,model", "--json", str(path)]
            if self.args.checkpoint:
                command += ["--checkpoint", self.args.checkpoint]
            timeout = max(10.0, min(NODE_TIMEOUT_S, self.deadline - time.monotonic() - 30))
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                return [Row("node end-to-end", "1024x2048", "skipped", note=f"no result within {timeout:.0f} s")]
            if done.returncode != 0 or not path.is_file():
                lines = (done.stderr or done.stdout or "").strip().splitlines()
                reason = lines[-1][:200] if lines else f"exit code {done.returncode}"
                return [Row("node end-to-end", "1024x2048", "skipped",
                            note=f"`{' '.join(command[1:4])} ...` failed: {reason}")]
            return node_rows_from_json(read_json(path))

    def amp_training_row(self) -> None:
        size = self.sizes()[0]
        setting = f"{size[0]}x{size[1]} batch {self.plan.train_batch}, fp16 autocast + GradScaler"
        self.guarded("AMP training step", setting, lambda: self.train_step(size, False, torch.device("cuda", 0)),
                     reserve_s=20)

    def ddp_row(self) -> None:
        size = self.sizes()[0]
        setting = f"{size[0]}x{size[1]} batch {self.plan.train_batch}, 1 process"
        self.guarded("NCCL DDP step", setting, lambda: self.train_step(size, True, torch.device("cuda", 0)),
                     reserve_s=20)

    def train_step(self, size: tuple[int, int], distributed: bool, device: torch.device) -> Row:
        """The trainer's own step (mtan_ros.training.epoch.train_step) with --amp: fp16 + GradScaler on CUDA.

        `distributed`: inside DistributedDataParallel in a one-process group (NCCL
        on CUDA, gloo on CPUs, which is how the suite runs this code).
        """
        tasks = {"semantic": 7, "depth": 1}
        group = _single_process_group(device) if distributed else None
        try:
            ctx = DistContext(rank=0, world_size=1, device=device)
            parts = build_parts(TrainConfig(width=self.plan.width, amp=True, epochs=1), tasks, ctx, steps_per_epoch=3)
            if distributed:
                ids = [device.index] if device.type == "cuda" else None
                parts.network = torch.nn.parallel.DistributedDataParallel(parts.model, device_ids=ids)
            n = self.plan.train_batch
            batch = {"image": torch.rand(n, 3, *size), "semantic": torch.randint(-1, 7, (n, *size)),
                     "depth": torch.rand(n, 1, *size)}
            weights = dict.fromkeys(tasks, 1.0)
            times = []
            for _ in range(3):  # the first step pays for cuDNN's algorithm search
                _synchronize(device)
                start = time.perf_counter()
                on_device = to_device(batch, device)
                images = on_device["image"].contiguous(memory_format=torch.channels_last)
                _, _, total = train_step(parts, images, on_device, weights, ctx, amp=True)
                _synchronize(device)
                times.append((time.perf_counter() - start) * 1e3)
            loss = float(total.detach())
            if not np.isfinite(loss):
                raise RuntimeError(f"the loss became {loss}")
            peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
            return Row("", "", result=f"{times[-1]:.1f} ms/step, loss {loss:.3f}, peak {peak:.2f} GiB",
                       values={"ms_per_step": times[-1], "loss": loss, "peak_gib": peak})
        finally:
            if group is not None:
                torch.distributed.destroy_process_group()

    def run(self) -> list[Row]:
        providers = onnxruntime_providers()
        print("rows as they finish:", flush=True)
        self.predictor_rows("Predictor CPU fp32", "cpu", {"precision": "fp32"}, needs_cuda=False, batches=[1])
        for precision in ("fp32", "fp16", "bf16"):
            self.predictor_rows(f"Predictor torch {precision}", "cuda", {"precision": precision})
        self.batched_row()
        self._onnxruntime_rows("Predictor onnxruntime CUDA fp32", "CUDAExecutionProvider", providers,
                               {"backend": "onnxruntime", "precision": "fp32", "providers": CUDA_PROVIDERS})
        self.node_rows()
        self.amp_training_row()
        self.ddp_row()
        self.predictor_rows("Predictor torch compiled fp16", "cuda", {"precision": "fp16", "compile": True},
                            reserve_s=60)
        self._onnxruntime_rows("Predictor onnxruntime TensorRT fp16", "TensorrtExecutionProvider", providers,
                               {"backend": "onnxruntime", "precision": "fp16", "providers": TENSORRT_PROVIDERS})
        return self.rows

    def _onnxruntime_rows(self, name: str, provider: str, installed: list[str], options: dict[str, Any]) -> None:
        if provider in installed or self.no_cuda:
            self.predictor_rows(name, "cuda", options, reserve_s=60)
            return
        for size in self.sizes():
            self.add(Row(name, f"{size[0]}x{size[1]} batch {','.join(map(str, self.plan.batches))}", "skipped",
                         note=f"{provider} not installed (pip install onnxruntime-gpu; TensorRT needs its "
                              "libraries too)"))


def node_rows_from_json(data: Any) -> list[Row]:
    """Rows from the node benchmark's JSON: a list of result dicts, or a dict holding one under "rows"/"results"."""
    items = data.get("rows", data.get("results", [data])) if isinstance(data, dict) else data
    rows = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        camera = item.get("camera") or item.get("size") or "1024x2048"
        output = item.get("output_resolution") or item.get("output") or "?"
        numbers = {k: v for k, v in item.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        result = ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in numbers.items())
        rows.append(Row("node end-to-end", f"{camera} output {output}", result=result or json.dumps(item)[:200],
                        values=item))
    return rows or [Row("node end-to-end", "1024x2048", "failed", note="the node benchmark wrote no rows")]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _single_process_group(device: torch.device):
    """A one-process group on a free local port (no torchrun needed): NCCL on CUDA, gloo on CPUs."""
    if device.type == "cuda" and not dist.is_nccl_available():
        raise RuntimeError("this torch has no NCCL")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    options: dict[str, Any] = {}
    if device.type == "cuda":
        torch.cuda.set_device(device)
        options["device_id"] = device
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=f"tcp://127.0.0.1:{port}",
                            rank=0, world_size=1, **options)
    return dist.group.WORLD


def table(rows: list[Row]) -> str:
    lines = ["| check | setting | status | result | note |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row.check} | {row.setting} | {row.status} | {row.result} | {row.note} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mtan_ros.benchmarks.gpu_check",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the rows and the machine description here")
    parser.add_argument("--checkpoint", help="a trained checkpoint (default: random weights, full width)")
    parser.add_argument("--budget-s", type=float, default=420.0,
                        help="stop starting expensive rows after this many seconds (default: 420)")
    parser.add_argument("--quick", action="store_true", help="tiny model and sizes: a smoke test of the check")
    return parser


def run(args: argparse.Namespace) -> int:
    start = time.monotonic()
    machine = environment()
    print("machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()), flush=True)
    rows = GpuCheck(args).run()
    print()
    print(table(rows))
    failed = sum(row.status == "failed" for row in rows)
    seconds = time.monotonic() - start
    print(f"\n{len(rows)} rows: {sum(r.status == 'ok' for r in rows)} ok, "
          f"{sum(r.status == 'skipped' for r in rows)} skipped, {failed} failed, in {seconds:.0f} s")
    if args.json:
        write_json(args.json, "gpu_check", [asdict(r) for r in rows], settings={"quick": args.quick},
                   environment=machine, seconds=seconds)
        print(f"wrote {args.json}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("gpu_check", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
