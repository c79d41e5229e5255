"""What a training run tells people: console lines, metrics.csv, TensorBoard, curves.png, report.json.

Only the main process writes or prints; the others' `RunLog` is silent.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

from mtan_ros.training.config import CONFIG_NAME, TrainConfig, save_config
from mtan_ros.training.distributed import DistContext
from mtan_ros.evaluation.plots import plot_curves
from mtan_ros.evaluation.report import build_report, depth_units, format_table, write_json
from mtan_ros.training.logs import TensorBoardLog, write_csv
from mtan_ros.training.run import BEST, LAST, RunData

__all__ = ["RunLog"]


class RunLog:
    """Console messages and per-epoch files of one run (``log`` replaces printing, e.g. in tests)."""

    def __init__(self, cfg: TrainConfig, ctx: DistContext, data: RunData,
                 log: Callable[[str], None] | None = None):
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.enabled = ctx.is_main
        self.world_size = ctx.world_size
        self.data = data
        self._log = log
        self.tb: Any = None

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self._log is not None:
            self._log(text)
        else:
            from tqdm.auto import tqdm  # optional: pip install .[train]

            tqdm.write(text)

    def start(self, start_epoch: int, device: Any) -> None:
        """Create the output folder, record the configuration, open TensorBoard, say what is trained."""
        if not self.enabled:
            return
        cfg, data = self.cfg, self.data
        self.out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, self.out / CONFIG_NAME)
        if cfg.tensorboard:
            self.tb = TensorBoardLog(self.out / "tensorboard", purge_step=start_epoch + 1)
        tasks = ", ".join(f"{t}[{n}]" for t, n in data.tasks.items())
        processes = f" x {self.world_size} processes" if self.world_size > 1 else ""
        self.message(f"training {cfg.arch} (width {cfg.width}) on {tasks} with {cfg.weighting} weighting: "
                     f"{len(data.train_set)} train / {len(data.val_set)} val images at "
                     f"{data.image_size[0]}x{data.image_size[1]}, batch {cfg.batch_size}{processes}, device "
                     f"{device}{', AMP' if cfg.amp else ''}; writing to {self.out}")

    def epoch(self, rows: list[dict[str, Any]]) -> None:
        """metrics.csv, TensorBoard scalars, curves.png and the console line for the newest row."""
        if not self.enabled:
            return
        row = rows[-1]
        write_csv(rows, self.out / "metrics.csv")
        if self.tb is not None:
            self.tb.log(row, int(row["epoch"]))
        if self.cfg.plots:
            plot_curves(rows, self.out / "curves.png",
                        title=f"{self.cfg.arch} {self.cfg.weighting} width {self.cfg.width}")
        self.message(self.summary(row))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None

    def summary(self, row: dict[str, Any]) -> str:
        """One console line per epoch."""
        tasks = self.data.tasks
        parts = [f"epoch {row['epoch']:>3d}/{self.cfg.epochs}"]
        parts.append("train " + " ".join(f"{t} {row[f'train_loss_{t}']:.4f}" for t in tasks))
        if "val_miou" in row:
            parts.append(f"val mIoU {row['val_miou'] * 100:.2f} acc {row['val_pixel_accuracy'] * 100:.2f}")
        if "val_abs_err" in row:
            parts.append(f"abs {row['val_abs_err']:.4f} rel {row['val_rel_err'] * 100:.2f}%")
            if "val_abs_err_m" in row:
                metres = row["val_abs_err_m"]
                parts.append(f"abs {metres:.2f} m" if math.isfinite(metres) else "abs - m (no positive depth)")
        if self.cfg.weighting != "equal":
            parts.append("w " + "/".join(f"{row[f'weight_{t}']:.3f}" for t in tasks))
        parts.append(f"{row['images_per_s']:.1f} img/s, {row['time_s']:.0f} s")
        return " | ".join(parts)

    def finish(self, rows: list[dict[str, Any]], best_metric: str, start_epoch: int,
               stopped_early: str | None) -> dict[str, Any]:
        """The paper-style report of the run (written as report.json and printed as a table)."""
        cfg, data = self.cfg, self.data
        info = {"arch": cfg.arch, "weighting": cfg.weighting, "width": cfg.width, "tasks": dict(data.tasks),
                "image_size": list(data.image_size), "world_size": self.world_size,
                "stopped_early": stopped_early, "checkpoint": str(self.out / BEST),
                "depth_encoding": data.depth_encoding.to_dict()}
        report = build_report(rows, best_metric=best_metric, last_n=cfg.report_last,
                              depth_encoding=data.depth_encoding, info=info)
        if start_epoch >= cfg.epochs:
            self.message(f"nothing to train: '{self.out}' already holds {start_epoch} epochs and --epochs is "
                         f"{cfg.epochs}; pass a larger --epochs to continue")
        if self.enabled and rows:
            write_json(report, self.out / "report.json")
            n = len(report["last_n"]["epochs"])
            table = {f"mean of last {n} epoch{'s' if n != 1 else ''}": report["last_n"]}
            if report["best"]:
                table[f"best epoch ({report['best']['epoch']})"] = report["best"]
            self.message(format_table(table, depth_units(data.depth_encoding)))
            self.message(f"checkpoints: {self.out / BEST} (best), {self.out / LAST} (last); "
                         f"report: {self.out / 'report.json'}; curves: {self.out / 'curves.png'}")
        return report
