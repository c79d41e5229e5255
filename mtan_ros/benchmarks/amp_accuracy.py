"""Validation metrics after the same short run, trained in fp32 and with --amp, over several seeds.

    python -m mtan_ros.benchmarks.amp_accuracy [--seeds 0,1,2] [--epochs 4] [--width 0.25] [--size 64x128]
        [--json out.json]

Mixed precision is only worth its speed if the network it trains is as good. One
synthetic street dataset (written once to a temporary folder) is
trained with the demo's recipe for --epochs epochs, once in fp32 and once with
`--amp` (bfloat16 autocast on a CPU with bf16 instructions; fp16 with GradScaler on
CUDA), for each seed, in turn. Every run sees the same data in the same order for
its seed, so the seeds measure what training noise alone does to the metrics: the
--amp mean counts as "within noise" of fp32's when the two means differ by at most
twice the larger of the two standard deviations over seeds (with 3 seeds, a gap of
2 sd between means is what chance produces rarely, not never).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from mtan_ros.benchmarks.inference import parse_size
from mtan_ros.benchmarks.report import write_json
from mtan_ros.common.cpu import cpu_bf16_flags
from mtan_ros.common.entry import run_command
from mtan_ros.data import write_preprocessed_tree
from mtan_ros.errors import ConfigError
from mtan_ros.training.config import TrainConfig
from mtan_ros.training.trainer import train

# metric column of metrics.csv -> label
METRICS = {
    "val_miou": "mIoU",
    "val_pixel_accuracy": "pixel acc",
    "val_abs_err_m": "depth abs err m",
    "val_rel_err_m": "depth rel err",
}
NOISE_FACTOR = 2.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mtan_ros.benchmarks.amp_accuracy",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds (default 0,1,2)")
    parser.add_argument("--epochs", type=int, default=4, metavar="N", help="epochs per run (default 4)")
    parser.add_argument("--width", type=float, default=0.25, metavar="W", help="network width (default 0.25)")
    parser.add_argument("--size", type=parse_size, default=(64, 128), metavar="HxW", help="image size (default 64x128)")
    parser.add_argument("--train-scenes", type=int, default=200, metavar="N", help="synthetic training scenes")
    parser.add_argument("--val-scenes", type=int, default=32, metavar="N", help="synthetic validation scenes")
    parser.add_argument("--batch-size", type=int, default=8, metavar="B")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate of the cosine schedule")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", metavar="FILE", help="also write the runs and the summary as JSON")
    return parser


def run_once(data: Path, out: Path, args: argparse.Namespace, seed: int, amp: bool) -> dict[str, Any]:
    """One training run; its last epoch's validation metrics and its training time."""
    config = TrainConfig(data=str(data), format="npy", out=str(out), epochs=args.epochs, batch_size=args.batch_size,
                         lr=args.lr, schedule="cosine", warmup=0.05, width=args.width, seed=seed, workers=0, amp=amp,
                         device=args.device, tensorboard=False, progress=False, plots=False, resume=False,
                         report_last=1)
    started = time.perf_counter()
    result = train(config, log=lambda _text: None)
    seconds = time.perf_counter() - started
    last = result.history[-1]
    return {"seed": seed, "amp": amp, "seconds": seconds, **{key: float(last[key]) for key in METRICS}}


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per metric: mean and sd over seeds for fp32 and --amp, their difference and whether it is within noise."""
    rows = []
    for key, label in METRICS.items():
        fp32 = [run[key] for run in runs if not run["amp"]]
        amp = [run[key] for run in runs if run["amp"]]
        sd = max(_sd(fp32), _sd(amp))
        delta = statistics.fmean(amp) - statistics.fmean(fp32)
        rows.append({"metric": label, "fp32_mean": statistics.fmean(fp32), "fp32_sd": _sd(fp32),
                     "amp_mean": statistics.fmean(amp), "amp_sd": _sd(amp), "delta": delta,
                     "within_noise": abs(delta) <= NOISE_FACTOR * sd})
    return rows


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def format_table(rows: list[dict[str, Any]], runs: list[dict[str, Any]]) -> str:
    lines = [f"| metric | fp32 mean ± sd | --amp mean ± sd | Δ (amp − fp32) | within {NOISE_FACTOR:g} sd |",
             "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['metric']} | {row['fp32_mean']:.4f} ± {row['fp32_sd']:.4f} | "
                     f"{row['amp_mean']:.4f} ± {row['amp_sd']:.4f} | {row['delta']:+.4f} | "
                     f"{'yes' if row['within_noise'] else 'NO'} |")
    fp32_s = statistics.fmean(run["seconds"] for run in runs if not run["amp"])
    amp_s = statistics.fmean(run["seconds"] for run in runs if run["amp"])
    lines.append(f"training time per run: fp32 {fp32_s:.0f} s, --amp {amp_s:.0f} s ({fp32_s / amp_s:.2f}x)")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("amp_accuracy", lambda: run(args))


def run(args: argparse.Namespace) -> int:
    seeds = [int(seed) for seed in args.seeds.split(",") if seed.strip()]
    if len(seeds) < 2:
        raise ConfigError("--seeds: give at least two seeds, the spread between them is the noise measured")
    if args.device == "cpu":
        flags = cpu_bf16_flags()
        print(f"--amp on this CPU: {'bfloat16 autocast' if flags else 'no bf16 instructions, so fp32'} "
              f"(bf16 flags: {', '.join(flags) or 'none'})")
    runs = []
    with tempfile.TemporaryDirectory(prefix="mtan_amp_accuracy_") as tmp:
        folder = Path(tmp)
        data = write_preprocessed_tree(folder / "data", n_train=args.train_scenes, n_val=args.val_scenes,
                                       size=args.size, seed=0)
        for seed in seeds:
            for amp in (False, True):
                run = run_once(data, folder / f"run_{seed}_{int(amp)}", args, seed, amp)
                runs.append(run)
                print(f"seed {seed} {'--amp' if amp else 'fp32 '}: " + ", ".join(
                    f"{label} {run[key]:.4f}" for key, label in METRICS.items()) + f" ({run['seconds']:.0f} s)",
                    flush=True)
    rows = summarise(runs)
    print(format_table(rows, runs))
    if args.json:
        write_json(args.json, "amp_accuracy", runs, settings={key: str(value) for key, value in vars(args).items()},
                   summary=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
