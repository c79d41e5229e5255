"""Train the paper's comparison on one dataset and print one table.

    python -m mtan_ros.training.compare --data DIR --out DIR [--epochs N] [--width W] [mtan-train flags]

Runs, one after another with identical settings otherwise: one SegNet per task
(``single``), a shared SegNet with task heads (``split``), and MTAN with equal,
DWA and uncertainty weighting and with PCGrad (``--runs`` picks some of them). Each run lands in OUT/<name>/ as a normal
mtan-train run (so it can be resumed or evaluated); the table (mean of the last
validated epochs, as the paper reports, plus wall time and parameter count) is
printed and saved as OUT/comparison.json.
"""
from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

from mtan_ros.common.entry import run_command
from mtan_ros.errors import ConfigError

__all__ = ["RUNS", "main"]

RUNS = {
    "single": {"arch": "single", "weighting": "equal"},
    "split equal": {"arch": "split", "weighting": "equal"},
    "mtan equal": {"arch": "mtan", "weighting": "equal"},
    "mtan dwa": {"arch": "mtan", "weighting": "dwa"},
    "mtan uncert": {"arch": "mtan", "weighting": "uncert"},
    "mtan pcgrad": {"arch": "mtan", "weighting": "pcgrad"},
}


def main(argv: list[str] | None = None) -> int:
    return run_command("compare", lambda: _compare(list(sys.argv[1:] if argv is None else argv)))


def _compare(argv: list[str]) -> None:
    # torch: +1.3 s, measured with -X importtime; RUNS imports without it
    from mtan_ros.model.checkpoint import build_model_from_checkpoint, load_checkpoint

    # torch: +1.3 s, measured with -X importtime; RUNS imports without it
    from mtan_ros.training.config import parse_train_args
    # torch: +1.3 s, measured with -X importtime; RUNS imports without it
    from mtan_ros.evaluation.report import format_table, write_json
    # torch: +1.3 s, measured with -X importtime; RUNS imports without it
    from mtan_ros.training.trainer import TrainingError, train

    only = None
    if "--runs" in argv:
        i = argv.index("--runs")
        if i + 1 >= len(argv):
            raise ConfigError(f"--runs needs a comma-separated list of runs from: {', '.join(RUNS)}")
        only = [name.strip() for name in argv[i + 1].split(",")]
        del argv[i:i + 2]
        unknown = [name for name in only if name not in RUNS]
        if unknown:
            raise ConfigError(f"unknown runs {unknown}; choose from {', '.join(RUNS)}")
    base = parse_train_args(argv)
    out = Path(base.out)
    table, summary = {}, {}
    for name, settings in RUNS.items():
        if only and name not in only:
            continue
        config = replace(base, out=str(out / name.replace(" ", "_")), **settings)
        start = time.perf_counter()
        try:
            result = train(config)
        except TrainingError as exc:
            raise TrainingError(f"{name}: {exc}") from None
        wall = time.perf_counter() - start
        report = result.report
        params = sum(p.numel() for p in build_model_from_checkpoint(load_checkpoint(result.last)).parameters())
        table[f"{name} ({wall / 60:.1f} min)"] = report["last_n"]
        summary[name] = {**report["last_n"], "best": report["best"], "wall_time_s": wall, "parameters": params,
                         "train_images_per_s": report["train_images_per_s"], "stopped_early": result.stopped_early}
        units = report["units"]["abs_err"]
    if not summary:
        raise ConfigError(f"no runs selected; choose from {', '.join(RUNS)}")
    text = format_table(table, units, with_paper=False)
    print(text)
    for name, s in summary.items():
        print(f"{name:14s} {s['parameters'] / 1e6:7.3f} M parameters, {s['train_images_per_s']:.2f} train img/s, "
              f"{s['wall_time_s']:.0f} s")
    write_json({"runs": summary, "settings": base.to_dict(), "table": text}, out / "comparison.json")


if __name__ == "__main__":
    sys.exit(main())
