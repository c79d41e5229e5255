"""`mtan-demo` (`make demo`): the whole system on a fresh machine, in minutes, on the CPU.

1. data: synthetic street scenes with exact depth and labels (or `--data`, your Cityscapes copy);
2. model: a small MTAN (width 0.25) trained for a fixed time budget with progress bars, or the
   checkpoint of a previous demo run with the same settings (or `--checkpoint`);
3. a validation rosbag (mcap) with camera images, camera_info and ground truth;
4. replay through ROS 2: the perception node, the bag player (lockstep: every frame waits for
   its prediction, nothing is dropped) and the evaluator run as separate processes that talk
   over DDS on a domain of their own, with simulated time from the bag; they are always
   stopped at the end, whatever happens.

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
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from mtan_ros.errors import DemoError  # noqa: F401 (re-exported)
from mtan_ros.bags import messages as bag_topics

DEFAULT_OUT = "runs/demo"
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
                        help="training time budget in minutes (default 4)")
    parser.add_argument("--epochs", type=int, default=200, metavar="N",
                        help="at most this many epochs (the time budget usually ends training first)")
    parser.add_argument("--width", type=float, default=0.25, metavar="W",
                        help="network width multiplier (default 0.25: about 2.6 M parameters)")
    parser.add_argument("--lr", type=float, default=1e-3,
                        help="Adam learning rate (default 1e-3: a short run needs more than the paper's 1e-4)")
    parser.add_argument("--batch-size", type=int, default=8, metavar="B")
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
    from mtan_ros.data import write_preprocessed_tree

    folder = out / "data"
    options = {"n_train": args.train_scenes, "n_val": args.val_scenes, "size": tuple(args.size), "seed": args.seed,
               "progress": not args.no_progress}
    try:  # the same scenes as last time are reused as they are
        write_preprocessed_tree(folder, **options)
    except FileExistsError:  # scenes of other settings: this folder is the demo's own, replace them
        write_preprocessed_tree(folder, overwrite=True, **options)
    return folder, "npy"


def _fingerprint(args: argparse.Namespace, data: Path, fmt: str) -> dict[str, Any]:
    """What a trained checkpoint depends on: reuse it only when all of this is the same."""
    return {"data": str(Path(data).resolve()), "format": fmt, "width": args.width, "lr": args.lr,
            "batch_size": args.batch_size, "seed": args.seed, "size": list(args.size),
            "train_scenes": args.train_scenes if not args.data else None, "amp": bool(args.amp)}


def prepare_checkpoint(out: Path, args: argparse.Namespace, data: Path, fmt: str) -> tuple[Path, str]:
    """(checkpoint path, how it was obtained): given, reused from a previous run, or trained now."""
    from mtan_ros.inference.checkpoint import CheckpointError, load_checkpoint

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
    from mtan_ros.training.config import TrainConfig
    from mtan_ros.training.trainer import TrainingError
    from mtan_ros.training.trainer import train as run_training

    config = TrainConfig(
        data=str(data), format=fmt, out=str(folder), epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        width=args.width, seed=args.seed, max_minutes=args.train_minutes, workers=0, amp=args.amp,
        tensorboard=False, progress=not args.no_progress, plots=True, resume=resume, report_last=3)
    try:
        run_training(config)
    except TrainingError as exc:
        raise DemoError(f"training failed: {exc}") from None


def make_bag(out: Path, args: argparse.Namespace, data: Path, fmt: str) -> Path:
    """The validation split as a bag: synthetic validation scenes at --bag-size, or --data's val split."""
    from mtan_ros.bags.make_bag import open_source, write_bag

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
    """A ROS node as a subprocess in its own process group, with its output in a log file."""

    def __init__(self, name: str, module: str, ros_args: Sequence[str], env: dict[str, str], log_dir: Path):
        self.name = name
        self.command = [sys.executable, "-m", module, "--ros-args", *ros_args]
        self.log_path = log_dir / f"{name}.log"
        self.env = env
        self.proc: Optional[subprocess.Popen] = None
        self._log: Any = None

    def start(self) -> "Process":
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.command, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_output(self, text: str, timeout: float) -> None:
        end = time.monotonic() + timeout
        while text not in self.output():
            if not self.alive():
                raise DemoError(f"the {self.name} stopped (exit code {self.proc.returncode}) before it was ready:\n"
                                f"{_tail(self.output())}")
            if time.monotonic() > end:
                raise DemoError(f"the {self.name} was not ready after {timeout:.0f} s:\n{_tail(self.output())}")
            time.sleep(0.1)

    def stop(self, timeout: float = 20.0) -> Optional[int]:
        """Ctrl-C, then SIGKILL for the whole process group if it does not end in time."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.proc.returncode


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join("    " + line for line in text.strip().splitlines()[-lines:])


def ros_environment(domain_id: int, log_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(domain_id), ROS_LOG_DIR=str(log_dir), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               PYTHONUNBUFFERED="1", RCUTILS_COLORIZED_OUTPUT="0")
    return env


def replay(out: Path, bag: Path, checkpoint: Path, frames: int, args: argparse.Namespace) -> dict[str, Any]:
    """Node + evaluator + lockstep player over DDS; returns report.json's content."""
    if importlib.util.find_spec("rclpy") is None:
        raise DemoError("the replay needs ROS 2's Python client library (rclpy): source a ROS 2 installation "
                        "or install the wheels with `pip install -e .[ros]`")
    log_dir = out / "logs"
    if log_dir.exists():
        shutil.rmtree(log_dir)
    (log_dir / "ros").mkdir(parents=True)
    for stale in ("report.json", "mosaic.png"):
        (out / stale).unlink(missing_ok=True)
    domain = args.domain_id if args.domain_id is not None else random.SystemRandom().randint(1, 100)
    env = ros_environment(domain, log_dir / "ros")
    ns = NODE_NAMESPACE
    sim = ["-p", "use_sim_time:=true"]
    node = Process("perception node", "mtan_ros.ros.perception_node",
                   ["-r", f"__ns:={ns}", "-p", f"model_path:={checkpoint}", *sim], env, log_dir)
    evaluator = Process("evaluator", "mtan_ros.ros.evaluator",
                        ["-r", f"__ns:={ns}", "-p", f"output_dir:={out}", "-p", f"bag:={bag}",
                         "-p", f"model_path:={checkpoint}", "-p", f"frames:={frames}", "-p", "idle_timeout:=60.0",
                         *sim], env, log_dir)
    wait = [bag_topics.IMAGE_TOPIC, bag_topics.DEPTH_GT_TOPIC, bag_topics.SEMANTIC_GT_TOPIC,
            bag_topics.PREDICTION_SEMANTIC_TOPIC]
    player = Process("bag player", "mtan_ros.ros.bag_player",
                     ["-p", f"bag:={bag}", "-p", "lockstep:=true", "-p", "rate:=0.0", "-p", "publish_clock:=true",
                      "-p", f"lockstep_topic:={bag_topics.PREDICTION_DEPTH_TOPIC}", "-p", "start_delay:=1.0",
                      "-p", "lockstep_timeout:=30.0", "-p", f"wait_for_subscribers:={wait!r}",
                      "-p", f"wait_for_publishers:={[bag_topics.PREDICTION_DEPTH_TOPIC]!r}"], env, log_dir)
    print(f"ROS_DOMAIN_ID={domain}, logs in {log_dir}", flush=True)
    processes = [node, evaluator, player]
    try:
        node.start()
        evaluator.start()
        node.wait_for_output("ready", timeout=180)
        evaluator.wait_for_output("evaluating", timeout=180)
        player.start()
        _follow(evaluator, player, frames, args)
        code = evaluator.proc.wait(timeout=30)
        if code != 0:
            raise DemoError(f"the evaluator failed (exit code {code}):\n{_tail(evaluator.output())}")
    finally:
        codes = {p.name: p.stop() for p in reversed(processes)}
    if codes.get("bag player") not in (0, None):
        raise DemoError(f"the bag player failed (exit code {codes['bag player']}):\n{_tail(player.output())}")
    report_path = out / "report.json"
    if not report_path.is_file():
        raise DemoError(f"the evaluator wrote no {report_path}:\n{_tail(evaluator.output())}")
    return json.loads(report_path.read_text())


def _follow(evaluator: Process, player: Process, frames: int, args: argparse.Namespace) -> None:
    """Wait for the evaluator to finish, with a progress bar fed by its log."""
    bar = None
    if not args.no_progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=frames, desc="replay (lockstep)", unit="frame", dynamic_ncols=True)
        except ImportError:
            bar = None
    end = time.monotonic() + args.replay_timeout
    pattern = re.compile(r"evaluated (\d+)")
    try:
        while evaluator.alive():
            if time.monotonic() > end:
                raise DemoError(f"the replay did not finish within {args.replay_timeout:.0f} s (--replay-timeout); "
                                f"evaluator:\n{_tail(evaluator.output())}\nplayer:\n{_tail(player.output())}")
            if not player.alive() and player.proc.returncode not in (0, None):
                raise DemoError(f"the bag player failed (exit code {player.proc.returncode}):\n"
                                f"{_tail(player.output())}")
            if bar is not None:
                found = pattern.findall(evaluator.output())
                if found:
                    bar.update(int(found[-1]) - bar.n)
            time.sleep(0.25)
        if bar is not None:
            bar.update(max(0, frames - bar.n) if "all" in evaluator.output() else 0)
    finally:
        if bar is not None:
            bar.close()


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
    from mtan_ros.bags.replay_eval import format_report

    lines = [format_report(report), ""]
    lines.append(f"done in {_minutes(seconds)}; checkpoint {how}. Results in {out}/:")
    lines.append("  report.json   accuracy and latency of the replay through the ROS 2 node")
    lines.append("  mosaic.png    input | predicted labels | ground truth | predicted depth | ground-truth depth")
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
            from mtan_ros.data import detect_format

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
    except DemoError as exc:
        print(f"\nmtan-demo: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nmtan-demo: interrupted; run it again to continue (a finished checkpoint is reused)", file=sys.stderr)
        return 130
    except (ValueError, OSError, ImportError) as exc:  # DataError, CheckpointError-like messages
        print(f"\nmtan-demo: error: {exc}", file=sys.stderr)
        return 2
    seconds = time.monotonic() - started
    _write_state(out, {"last_run": {"seconds": round(seconds, 1), "checkpoint": str(checkpoint), "how": how,
                                    "bag": str(bag), "frames": frames}})
    print()
    print(summary_text(out, bag, checkpoint, how, report, seconds, synthetic), flush=True)
    return 0


def _bag_frames(bag: Path) -> int:
    from mtan_ros.bags.reader import open_bag

    info = json.loads(open_bag(bag).custom_data.get("mtan_ros", "{}"))
    return int(info["frames"])


if __name__ == "__main__":
    sys.exit(main())
