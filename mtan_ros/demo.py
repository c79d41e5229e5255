"""`mtan-demo` (`make demo`): the whole system on a fresh machine, in minutes, on the CPU.

1. data: synthetic street scenes with exact depth and labels (or `--data`, your Cityscapes copy);
2. model: a small MTAN (width 0.25) trained for a fixed time budget with progress bars, or the
   checkpoint of a previous demo run with the same settings (or `--checkpoint`);
3. a validation rosbag (mcap) with camera images, camera_info and ground truth;
4. replay through ROS 2: the perception node, the bag player (lockstep: every frame waits for
   its prediction, nothing is dropped) and the evaluator run as separate processes that talk
   over DDS on a domain of their own, with simulated time from the bag. They are the graph of
   replay.launch.py (mtan_ros.ros.replay.replay_graph), started as `python -m` processes because
   `launch` is not on PyPI. The player waits until the node is active and the evaluator
   listens; the demo watches only exit codes and the evaluator's progress.json / report.json.
   The processes are always stopped at the end, whatever happens.

Results land in `--out` (runs/demo): checkpoint/, val_bag/, report.json, mosaic.png, logs/.
Synthetic scenes show that the pipeline works end to end; their numbers say nothing about
accuracy on real streets.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any, Optional

from mtan_ros.bags.make_bag import open_source, write_bag
from mtan_ros.bags.reader import open_bag
from mtan_ros.common.entry import EXIT_INTERRUPTED, EXIT_USER_ERROR
from mtan_ros.common.processes import ChildGroup
from mtan_ros.data import detect_format
from mtan_ros.errors import DemoError, MtanRosError
from mtan_ros.evaluation.replay import format_report
from mtan_ros.ros.replay.replay_graph import ReplayOptions, replay_nodes

DEFAULT_OUT = "runs/demo"
# A short run: rise to --lr over the first 5 % of the steps, then decay to zero by the last epoch.
DEMO_SCHEDULE = "cosine"
# Training scenes averaged over 3x3 rays per pixel: the node sees the bag's larger frames downscaled
# (antialiased), and a model trained on one-ray scenes lost 7 mIoU points on them (55.3 -> 48.3 %).
TRAIN_SUPERSAMPLE = 3
STATE_FILE = "demo.json"
NODE_NAMESPACE = "/camera"


# ------------------------------------------------------------------------------------ options

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mtan-demo",
        description="Train a small MTAN on synthetic streets (or your Cityscapes copy), write a validation bag, "
                    "replay it through the ROS 2 perception node and report accuracy and latency.")
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--data", metavar="DIR", help="use this dataset (raw Cityscapes or the preprocessed .npy "
                                                      "tree) instead of synthetic scenes")
    parser.add_argument("--format", default="auto", choices=("auto", "npy", "raw"), help="layout of --data")
    parser.add_argument("--checkpoint", metavar="CK", help="use this checkpoint instead of training one")
    parser.add_argument("--train-minutes", type=float, default=4.0, metavar="MIN",
                        help="training time budget in minutes (default 4; a cap: a quiet 2-core machine finishes "
                             "the default epochs in about 3.8)")
    parser.add_argument("--epochs", type=int, default=9, metavar="N",
                        help="epochs; the cosine learning-rate schedule decays over all of them (default 9: 450 "
                             "steps of 8 images)")
    parser.add_argument("--width", type=float, default=0.25, metavar="W",
                        help="network width multiplier (default 0.25: about 2.6 M parameters)")
    parser.add_argument("--lr", type=float, default=2e-3,
                        help="Adam peak learning rate of the cosine schedule (default 2e-3: a short run needs more "
                             "than the paper's 1e-4)")
    parser.add_argument("--batch-size", type=int, default=8, metavar="B",
                        help="images per step (default 8: about 25 %% more images/s than 4 on a 2-core CPU, "
                             "and with lr 2e-3 it learned more in the same time)")
    parser.add_argument("--size", type=int, nargs=2, default=(64, 128), metavar=("H", "W"),
                        help="synthetic training image size (default 64 128: four times the training steps of "
                             "128 256 in the same time)")
    parser.add_argument("--bag-size", type=int, nargs=2, default=(128, 256), metavar=("H", "W"),
                        help="synthetic camera image size in the bag (default 128 256; the node resizes to the "
                             "model's input and publishes at the camera's size)")
    parser.add_argument("--train-scenes", type=int, default=400, metavar="N", help="synthetic training scenes")
    parser.add_argument("--val-scenes", type=int, default=16, metavar="N",
                        help="synthetic validation scenes used while training")
    parser.add_argument("--frames", type=int, default=40, metavar="N", help="frames in the validation bag")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--retrain", action="store_true", help="train again even if a previous run's checkpoint fits")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=False,
                        help="train with mixed precision (bfloat16 on CPUs that support it)")
    parser.add_argument("--domain-id", type=int, metavar="ID",
                        help="ROS_DOMAIN_ID for the replay (default: a random free-looking one in 1..100)")
    parser.add_argument("--replay-timeout", type=float, default=600.0, metavar="S",
                        help="give up the replay after this many seconds (default 600)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


# ------------------------------------------------------------------------------------ steps

def _step(number: int, total: int, text: str) -> None:
    print(f"\n[{number}/{total}] {text}", flush=True)


def make_synthetic_data(out: Path, args: argparse.Namespace) -> tuple[Path, str]:
    # torch (via mtan_ros.data.writers): +2.7 s measured with -X importtime. The imports that load torch stay
    # in the steps that use them, so that `mtan-demo --help` and a mistyped option answer at once.
    from mtan_ros.data import write_preprocessed_tree

    folder = out / "data"
    options = {"n_train": args.train_scenes, "n_val": args.val_scenes, "size": tuple(args.size), "seed": args.seed,
               "supersample": TRAIN_SUPERSAMPLE, "progress": not args.no_progress}
    try:  # the same scenes as last time are reused as they are
        write_preprocessed_tree(folder, **options)
    except FileExistsError:  # scenes of other settings: this folder is the demo's own, replace them
        write_preprocessed_tree(folder, overwrite=True, **options)
    return folder, "npy"


def _fingerprint(args: argparse.Namespace, data: Path, fmt: str) -> dict[str, Any]:
    """What a trained checkpoint depends on: reuse it only when all of this is the same."""
    return {"data": str(Path(data).resolve()), "format": fmt, "width": args.width, "lr": args.lr,
            "batch_size": args.batch_size, "epochs": args.epochs, "schedule": DEMO_SCHEDULE,
            "supersample": TRAIN_SUPERSAMPLE if not args.data else None,
            "seed": args.seed, "size": list(args.size),
            "train_scenes": args.train_scenes if not args.data else None, "amp": bool(args.amp)}


def prepare_checkpoint(out: Path, args: argparse.Namespace, data: Path, fmt: str) -> tuple[Path, str]:
    """(checkpoint path, how it was obtained): given, reused from a previous run, or trained now."""
    from mtan_ros.model.checkpoint import CheckpointError, load_checkpoint  # torch: +2.8 s, see make_synthetic_data

    if args.checkpoint:
        try:
            load_checkpoint(args.checkpoint)
        except CheckpointError as exc:
            raise DemoError(f"--checkpoint {args.checkpoint}: {exc}") from None
        return Path(args.checkpoint), "given"
    folder = out / "checkpoint"
    state_path = out / STATE_FILE
    fingerprint = _fingerprint(args, data, fmt)
    previous = {}
    if state_path.is_file():
        try:
            previous = json.loads(state_path.read_text()).get("training", {})
        except ValueError:
            previous = {}
    best = folder / "best.pt"
    same = previous == fingerprint
    if same and not args.retrain and best.is_file():
        try:
            load_checkpoint(best)
            return best, "reused"
        except CheckpointError as exc:
            print(f"the previous checkpoint cannot be used ({exc}); training again", flush=True)
    resume = same and not args.retrain and (folder / "last.pt").is_file()
    if folder.exists() and not resume:
        shutil.rmtree(folder)
    _write_state(out, {"training": fingerprint})
    train(folder, args, data, fmt, resume)
    if not best.is_file():
        raise DemoError(f"training finished without writing {best}; see the messages above")
    return best, "resumed and trained" if resume else "trained"


def train(folder: Path, args: argparse.Namespace, data: Path, fmt: str, resume: bool) -> None:
    # torch: +2.0 s (-X importtime), see make_synthetic_data
    from mtan_ros.training.config import TrainConfig
    from mtan_ros.training.trainer import TrainingError  # torch, as above
    from mtan_ros.training.trainer import train as run_training  # torch, as above

    config = TrainConfig(
        data=str(data), format=fmt, out=str(folder), epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        schedule=DEMO_SCHEDULE, warmup=0.05, width=args.width, seed=args.seed, max_minutes=args.train_minutes,
        workers=0, amp=args.amp,
        tensorboard=False, progress=not args.no_progress, plots=True, resume=resume, report_last=3)
    try:
        run_training(config)
    except TrainingError as exc:
        raise DemoError(f"training failed: {exc}") from None


def make_bag(out: Path, args: argparse.Namespace, data: Path, fmt: str) -> Path:
    """The validation split as a bag: synthetic validation scenes at --bag-size, or --data's val split."""
    bag = out / "val_bag"
    if bag.exists():
        shutil.rmtree(bag)
    if args.data:
        dataset = open_source(str(data), fmt, split="val")
    else:
        dataset = open_source(None, "synthetic", split="val", size=tuple(args.bag_size), count=args.frames,
                              seed=args.seed)
    if len(dataset) == 0:
        raise DemoError(f"'{data}' has no validation frames to replay")
    summary = write_bag(dataset, bag, limit=args.frames, progress=not args.no_progress,
                        custom={"source": str(data), "format": fmt, "split": "val", "written_by": "mtan-demo"})
    print(f"wrote {summary.frames} frames to {bag} ({summary.bytes / 1e6:.1f} MB, "
          f"{summary.frames_per_s:.1f} frames/s)", flush=True)
    return bag


# ------------------------------------------------------------------------------------ replay

class Process:
    """One process of the replay graph, in its own process group, with its output in a log file."""

    def __init__(self, spec: Any, env: dict[str, str], log_dir: Path):
        self.spec = spec
        self.name = spec.label
        self.log_path = log_dir / f"{spec.label}.log"
        self.child = ChildGroup(spec.python_command(), env={**env, **spec.env}, log_path=self.log_path)

    def start(self) -> "Process":
        self.child.start()
        return self

    def exit_code(self) -> Optional[int]:
        """None while it runs."""
        return self.child.exit_code()

    def output(self) -> str:
        return self.child.output()

    def stop(self) -> Optional[int]:
        """Ctrl-C, then SIGKILL for the whole process group if it does not end in time."""
        return self.child.stop(timeout=self.spec.stop_timeout)


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join("    " + line for line in text.strip().splitlines()[-lines:])


def ros_environment(domain_id: int, log_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(domain_id), ROS_LOG_DIR=str(log_dir), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               PYTHONUNBUFFERED="1", RCUTILS_COLORIZED_OUTPUT="0")
    return env


def replay_options(out: Path, bag: Path, checkpoint: Path, frames: int) -> Any:
    """The demo's replay: lockstep as fast as the node goes, simulated time from the bag."""
    return ReplayOptions(bag=str(bag), model_path=str(checkpoint), namespace=NODE_NAMESPACE, lockstep=True,
                         rate=0.0, use_sim_time=True, output_dir=str(out), frames=frames, idle_timeout=60.0,
                         wait_timeout=300.0)


def replay(out: Path, bag: Path, checkpoint: Path, frames: int, args: argparse.Namespace) -> dict[str, Any]:
    """Node + evaluator + lockstep player over DDS (mtan_ros.ros.replay.replay_graph); returns report.json's content.

    The player itself waits until the node is active and the evaluator listens; here only
    exit codes and the evaluator's files (progress.json, report.json) are watched.
    """
    if importlib.util.find_spec("rclpy") is None:
        raise DemoError("the replay needs ROS 2's Python client library (rclpy): source a ROS 2 installation "
                        "or install the wheels with `pip install -e .[ros]`")
    log_dir = out / "logs"
    if log_dir.exists():
        shutil.rmtree(log_dir)
    (log_dir / "ros").mkdir(parents=True)
    for stale in ("report.json", "mosaic.png", "progress.json"):
        (out / stale).unlink(missing_ok=True)
    domain = args.domain_id if args.domain_id is not None else random.SystemRandom().randint(1, 100)
    env = ros_environment(domain, log_dir / "ros")
    specs = replay_nodes(replay_options(out, bag, checkpoint, frames), environ=env)
    processes = [Process(spec, env, log_dir) for spec in specs]
    print(f"ROS_DOMAIN_ID={domain}, logs in {log_dir}", flush=True)
    try:
        for process in processes:
            process.start()
        _follow(processes, out, frames, args)
    finally:
        for process in reversed(processes):
            process.stop()
    report_path = out / "report.json"
    if not report_path.is_file():
        evaluator = next(p for p in processes if p.spec.role == "evaluator")
        raise DemoError(f"the evaluator wrote no {report_path}:\n{_tail(evaluator.output())}")
    return json.loads(report_path.read_text())


def _failure(process: Process, code: int) -> DemoError:
    return DemoError(f"the {process.name} {'failed' if code else 'stopped'} (exit code {code}) before the replay "
                     f"was over; its output ({process.log_path}):\n{_tail(process.output())}")


def _follow(processes: list[Process], out: Path, frames: int, args: argparse.Namespace) -> None:
    """Until the evaluator has exited: fail on the first process that fails; a bar from progress.json."""
    bar = None
    if not args.no_progress:
        try:
            from tqdm import tqdm  # optional: pip install .[train]

            bar = tqdm(total=frames, desc="replay (lockstep)", unit="frame", dynamic_ncols=True)
        except ImportError:
            bar = None
    end = time.monotonic() + args.replay_timeout
    try:
        while True:
            for process in processes:
                code = process.exit_code()
                if code is None or (code == 0 and process.spec.role == "player"):
                    continue  # running, or a player that has played the whole bag
                if code == 0 and process.spec.role == "evaluator":
                    return
                raise _failure(process, code)
            if time.monotonic() > end:
                raise DemoError(f"the replay did not finish within {args.replay_timeout:.0f} s (--replay-timeout); "
                                f"the nodes' output is in {processes[0].log_path.parent}")
            if bar is not None:
                bar.update(max(0, _evaluated(out) - bar.n))
            time.sleep(0.25)
    finally:
        if bar is not None:
            bar.update(max(0, _evaluated(out) - bar.n))
            bar.close()


def _evaluated(out: Path) -> int:
    """Frames evaluated so far, from the evaluator's progress.json (0 before it writes one)."""
    try:
        return int(json.loads((out / "progress.json").read_text())["evaluated"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


# ------------------------------------------------------------------------------------ summary

def _write_state(out: Path, update: dict[str, Any]) -> None:
    path = out / STATE_FILE
    state = {}
    if path.is_file():
        try:
            state = json.loads(path.read_text())
        except ValueError:
            state = {}
    state.update(update)
    path.write_text(json.dumps(state, indent=2) + "\n")


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s" if seconds >= 60 else f"{seconds:.1f} s"


def summary_text(out: Path, bag: Path, checkpoint: Path, how: str, report: dict[str, Any], seconds: float,
                 synthetic: bool) -> str:
    lines = [format_report(report), ""]
    lines.append(f"done in {_minutes(seconds)}; checkpoint {how}. Results in {out}/:")
    lines.append("  report.json   accuracy and latency of the replay through the ROS 2 node")
    lines.append("  mosaic.png    input | predicted labels | ground truth | predicted depth | ground-truth depth "
                 "(depth on one scale, colour bar in metres, class legend)")
    lines.append(f"  {checkpoint}  the model (with curves.png and metrics.csv beside it when trained here)")
    lines.append(f"  {bag}/   the validation bag (mcap): `ros2 bag info {bag}`")
    lines.append("  logs/         output of the three ROS nodes")
    if synthetic:
        lines.append("Synthetic streets demonstrate the pipeline; their numbers say nothing about real-world accuracy.")
    lines.append("See it in RViz (ROS 2 with this package built, `source install/setup.bash`):")
    lines.append(f"  ros2 launch mtan_ros replay.launch.py bag:={bag} model_path:={checkpoint} rviz:=true")
    return "\n".join(lines)


def _terminate_like_ctrl_c(signum: int, frame: Any) -> None:
    """SIGTERM (e.g. `kill`, a CI timeout) unwinds like Ctrl-C, so the ROS nodes are stopped too."""
    raise KeyboardInterrupt


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.monotonic()
    try:
        previous_term = signal.signal(signal.SIGTERM, _terminate_like_ctrl_c)
    except ValueError:  # not the main thread
        previous_term = None
    try:
        return _run(args, started)
    finally:
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)


def _run(args: argparse.Namespace, started: float) -> int:
    out = Path(args.out)
    try:
        for name in ("train_minutes", "width", "lr"):
            if not getattr(args, name) > 0:
                raise DemoError(f"--{name.replace('_', '-')} must be positive")
        for name in ("frames", "train_scenes", "val_scenes", "epochs", "batch_size"):
            if getattr(args, name) < 1:
                raise DemoError(f"--{name.replace('_', '-')} must be at least 1")
        if any(v % 32 for v in args.size):
            raise DemoError(f"--size {args.size[0]} {args.size[1]}: both must be multiples of 32 (e.g. 64 128)")
        if min(args.bag_size) < 1:
            raise DemoError("--bag-size must be positive")
        out.mkdir(parents=True, exist_ok=True)
        synthetic = not args.data
        total = 4
        if synthetic:
            _step(1, total, f"synthetic streets: {args.train_scenes} training and {args.val_scenes} validation "
                            f"scenes at {args.size[0]}x{args.size[1]} (exact depth and labels; not Cityscapes)")
            data, fmt = make_synthetic_data(out, args)
        else:
            _step(1, total, f"dataset: {args.data}")
            data, fmt = Path(args.data), args.format if args.format != "auto" else detect_format(args.data, "val")
        _step(2, total, "model: " + ("the given checkpoint" if args.checkpoint else
                                     f"MTAN width {args.width:g}, training for at most {args.train_minutes:g} min "
                                     "(or the checkpoint of a previous run with these settings)"))
        checkpoint, how = prepare_checkpoint(out, args, data, fmt)
        print(f"checkpoint ({how}): {checkpoint}", flush=True)
        _step(3, total, f"validation bag: {args.frames} frames")
        bag = make_bag(out, args, data, fmt)
        frames = _bag_frames(bag)
        _step(4, total, "replay: perception node + bag player (lockstep) + evaluator over ROS 2")
        report = replay(out, bag, checkpoint, frames, args)
    except MtanRosError as exc:  # the demo's own, a damaged bag or checkpoint, bad data: one line
        print(f"\nmtan-demo: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("\nmtan-demo: interrupted; run it again to continue (a finished checkpoint is reused)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, OSError, ImportError) as exc:  # DataError, CheckpointError-like messages
        print(f"\nmtan-demo: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    seconds = time.monotonic() - started
    _write_state(out, {"last_run": {"seconds": round(seconds, 1), "checkpoint": str(checkpoint), "how": how,
                                    "bag": str(bag), "frames": frames}})
    print()
    print(summary_text(out, bag, checkpoint, how, report, seconds, synthetic), flush=True)
    return 0


def _bag_frames(bag: Path) -> int:
    info = json.loads(open_bag(bag).custom_data.get("mtan_ros", "{}"))
    return int(info["frames"])


if __name__ == "__main__":
    sys.exit(main())
