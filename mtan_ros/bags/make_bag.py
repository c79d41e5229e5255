"""`mtan-make-bag`: turn a dataset split into a rosbag2 that replays like a camera.

    mtan-make-bag --data DIR [--format auto|npy|raw|synthetic] --out BAG
                  [--storage mcap|sqlite3] [--rate HZ] [--compressed [jpeg|png]]
                  [--split val] [--limit N] [--size H W] [--count N] [--seed S]

Each frame becomes four messages with the same header stamp and log time, one
frame every 1/rate seconds (default 17 Hz, the Cityscapes camera), all in the
camera's optical frame:
  /camera/camera_info   sensor_msgs/CameraInfo (intrinsics at the stored image size:
                        the Cityscapes camera scaled, or each raw frame's camera json)
  /camera/image_raw     sensor_msgs/Image rgb8 (or /camera/image_raw/compressed with --compressed)
  /camera/depth_gt      sensor_msgs/Image 32FC1 metres, NaN = no ground truth
                        (converted with the dataset's depth encoding, never guessed)
  /camera/semantic_gt   sensor_msgs/Image mono8 class ids, 255 = void
The bag's metadata (custom_data "mtan_ros") records the classes, source and rate.

Bags are written with the `rosbags` library (no ROS needed; it writes metadata.yaml
and sqlite3 files) and, for mcap, the `mcap` library's writer (`McapStorage`), so
that every chunk carries a CRC and readers can tell a damaged chunk from an intact
one; they open with `ros2 bag info/play`, rosbags and mcap readers. Ctrl-C stops
after the current frame and closes the bag properly, so every frame written so
far stays playable.
"""
from __future__ import annotations

import argparse
import functools
import inspect
import json
import math
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np


from mtan_ros.bags import messages as m
from mtan_ros.common.entry import run_command
from mtan_ros.data import open_dataset
from mtan_ros.errors import MakeBagError  # noqa: F401 (re-exported)

STORAGES = ("mcap", "sqlite3")
FORMATS = ("auto", "npy", "raw", "synthetic")
# A chunk is closed at the first frame boundary after this many bytes: chunks hold whole frames,
# so a damaged chunk costs whole frames, and about this much data.
MCAP_CHUNK_BYTES = 1 << 20


def hxw(height: int, width: int) -> str:
    """An image size as every bag tool prints it: height x width, like the README and the bag metadata."""
    return f"{int(height)}x{int(width)}"


class McapStorage:
    """rosbags' storage-writer interface (rosbags.rosbag2.Writer.STORAGE_PLUGINS) on the `mcap` writer.

    Why: rosbags writes every mcap chunk with CRC 0, so a reader cannot tell altered
    bytes from intact ones. This writes the same rosbag2 layout (profile ros2, ros2msg
    schemas, cdr channels with offered_qos_profiles and topic_type_hash, the rosbag2
    metadata record) with CRCs, closes chunks only between frames (log times), and
    also writes schemas and channels outside the first chunk, so that losing that chunk
    does not make the others unreadable.
    """

    def __init__(self, path: Path, compression: Any, *, chunk_bytes: int = MCAP_CHUNK_BYTES) -> None:
        from mcap.writer import CompressionType, Writer  # optional: pip install .[bags]
        from rosbags.rosbag2 import CompressionMode  # optional: pip install .[bags]

        self.path = path / f"{path.name}.mcap"
        self._file = self.path.open("xb")
        # Writer.flush() (closing a chunk on demand) is recent; without it the library closes chunks by size.
        self._by_frame = hasattr(Writer, "flush")
        # No data-section CRC: the records _top_level writes past the library would not be in it.
        options = {"enable_data_crcs": False} if "enable_data_crcs" in inspect.signature(Writer).parameters else {}
        self._writer = Writer(self._file, chunk_size=(1 << 62) if self._by_frame else chunk_bytes,
                              compression=CompressionType.ZSTD if compression == CompressionMode.STORAGE
                              else CompressionType.NONE, enable_crcs=True, **options)
        self._writer.start(profile="ros2", library="mtan_ros mtan-make-bag")
        self._chunk_bytes = int(chunk_bytes)
        self._schemas: dict[str, int] = {}
        self._channels: dict[int, int] = {}
        self._pending = 0
        self._log_time: Optional[int] = None

    def _top_level(self, record: Any) -> None:
        from mcap.data_stream import RecordBuilder  # optional: pip install .[bags]

        builder = RecordBuilder()
        record.write(builder)
        self._file.write(builder.end())

    def add_msgtype(self, connection: Any) -> None:
        from mcap.records import Schema  # optional: pip install .[bags]
        from rosbags.interfaces import MessageDefinitionFormat  # optional: pip install .[bags]

        encoding = "ros2msg" if connection.msgdef.format == MessageDefinitionFormat.MSG else "ros2idl"
        data = connection.msgdef.data.encode()
        schema_id = self._writer.register_schema(connection.msgtype, encoding, data)
        self._schemas[connection.msgtype] = schema_id
        self._top_level(Schema(id=schema_id, name=connection.msgtype, encoding=encoding, data=data))

    def add_connection(self, connection: Any, offered_qos_profiles: str) -> None:
        from mcap.records import Channel  # optional: pip install .[bags]

        metadata = {"offered_qos_profiles": offered_qos_profiles, "topic_type_hash": connection.digest}
        encoding = connection.ext.serialization_format
        schema_id = self._schemas[connection.msgtype]
        channel_id = self._writer.register_channel(connection.topic, encoding, schema_id, metadata)
        self._channels[connection.id] = channel_id
        self._top_level(Channel(id=channel_id, topic=connection.topic, message_encoding=encoding,
                                schema_id=schema_id, metadata=metadata))

    def write(self, connection: Any, timestamp: int, data: "bytes | memoryview") -> None:
        if self._by_frame and timestamp != self._log_time and self._pending >= self._chunk_bytes:
            self._writer.flush()
            self._pending = 0
        self._writer.add_message(self._channels[connection.id], timestamp, bytes(data), timestamp)
        self._pending += len(data)
        self._log_time = timestamp

    def close(self, version: int, metadata: str) -> None:  # noqa: ARG002 - the interface's signature
        if self._by_frame:
            self._writer.flush()
        self._writer.add_metadata("rosbag2", {"serialized_metadata": metadata})
        self._writer.finish()
        self._file.close()

    def abort(self) -> None:
        self._file.close()


@dataclass
class BagTopics:
    image: str = m.IMAGE_TOPIC
    compressed: str = m.COMPRESSED_TOPIC
    camera_info: str = m.CAMERA_INFO_TOPIC
    depth_gt: str = m.DEPTH_GT_TOPIC
    semantic_gt: str = m.SEMANTIC_GT_TOPIC

    @classmethod
    def under(cls, base: str) -> "BagTopics":
        """The default topics with their /camera prefix replaced by `base` (a namespace of one's own)."""
        prefix = m.IMAGE_TOPIC.rsplit("/", 1)[0]
        return cls(**{name: base + topic[len(prefix):] for name, topic in vars(cls()).items()})


@dataclass
class BagSummary:
    path: Path
    storage: str
    frames: int
    messages: int
    bytes: int
    seconds: float
    image_size: tuple[int, int]
    interrupted: bool = False

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else math.nan

    @property
    def megabytes_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else math.nan


def frame_arrays(item: dict[str, Any], depth_encoding: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A dataset item -> (RGB uint8 H x W x 3, depth float32 metres with NaN, labels uint8 with 255 void)."""
    image = item["image"].permute(1, 2, 0).numpy() if hasattr(item["image"], "permute") else item["image"]
    rgb = np.clip(np.rint(np.asarray(image, np.float32) * 255.0), 0, 255).astype(np.uint8)
    depth = np.asarray(item["depth"]).reshape(rgb.shape[:2])
    metres = np.asarray(depth_encoding.to_metres(depth), dtype=np.float32)
    labels = m.labels_to_mono8(np.asarray(item["semantic"]))
    return rgb, metres, labels


def _interrupt_flag():
    """SIGINT sets a flag (checked between frames) instead of raising in the middle of a write."""
    state = {"stop": False}
    previous = None

    def handler(signum, frame):  # noqa: ARG001 - signal handler signature
        if state["stop"]:  # second Ctrl-C: give up at once
            raise KeyboardInterrupt
        state["stop"] = True

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: keep Python's default behaviour
        previous = None
    return state, previous


def write_bag(dataset: Any, out: "str | Path", *, storage: str = "mcap", rate: float = m.DEFAULT_RATE_HZ,
              compressed: Optional[str] = None, limit: Optional[int] = None, frame_id: str = m.FRAME_ID,
              start_ns: Optional[int] = None, topics: BagTopics = BagTopics(), progress: bool = True,
              custom: Optional[dict[str, Any]] = None, chunk_bytes: int = MCAP_CHUNK_BYTES) -> BagSummary:
    """Write frames 0..limit-1 of `dataset` (see the module doc for the topics) as a bag at `out`.

    dataset: a mtan_ros.data dataset (items with image/semantic/depth, `.camera(i)`,
    `.depth_encoding`, `.classes`). compressed: None, "jpeg" or "png". start_ns: stamp of
    the first frame (default: now, rounded to the second). chunk_bytes: mcap chunk size
    (see MCAP_CHUNK_BYTES).
    """
    if storage not in STORAGES:
        raise MakeBagError(f"storage must be one of {', '.join(STORAGES)}; got {storage!r}")
    if not (math.isfinite(rate) and rate > 0):
        raise MakeBagError(f"rate must be a positive number of frames per second; got {rate!r}")
    if compressed not in (None, "jpeg", "png"):
        raise MakeBagError(f"compressed must be jpeg or png; got {compressed!r}")
    out = Path(out)
    if out.exists():
        raise MakeBagError(f"'{out}' already exists; choose another --out or pass --overwrite")
    count = len(dataset) if limit is None else min(int(limit), len(dataset))
    if count <= 0:
        raise MakeBagError(f"the dataset has {len(dataset)} frames (limit {limit}); nothing to write")
    if start_ns is None:
        start_ns = int(time.time()) * 1_000_000_000
    period_ns = 1e9 / rate
    encoding = dataset.depth_encoding
    info = {
        "frames": count, "rate_hz": rate, "frame_id": frame_id,
        "image_size": list(dataset.image_size), "num_classes": dataset.classes.num_classes,
        "class_names": list(dataset.classes.names), "class_colors": [list(c) for c in dataset.classes.colors],
        "source_depth_encoding": encoding.to_dict(), "depth_gt": "32FC1 metres, NaN = no ground truth",
        "semantic_gt": f"mono8 class ids, {m.VOID_LABEL} = void", "compressed": compressed or "",
        "topics": vars(topics), **(custom or {}),
    }

    writer = open_writer(out, storage, chunk_bytes)
    writer.set_custom_data("mtan_ros", json.dumps(info))
    store = m.typestore()
    state, previous = _interrupt_flag()
    written = n_messages = n_bytes = 0
    started = time.perf_counter()
    try:
        writer.open()
        conn_info = writer.add_connection(topics.camera_info, m.CAMERA_INFO_TYPE, typestore=store)
        if compressed:
            conn_image = writer.add_connection(topics.compressed, m.COMPRESSED_TYPE, typestore=store)
        else:
            conn_image = writer.add_connection(topics.image, m.IMAGE_TYPE, typestore=store)
        conn_depth = writer.add_connection(topics.depth_gt, m.IMAGE_TYPE, typestore=store)
        conn_sem = writer.add_connection(topics.semantic_gt, m.IMAGE_TYPE, typestore=store)
        bar = _progress(count, f"writing {out.name}", progress)
        for index in range(count):
            if state["stop"]:
                break
            rgb, metres, labels = frame_arrays(dataset[index], encoding)
            camera = dataset.camera(index)
            if (int(camera.height), int(camera.width)) != rgb.shape[:2]:
                raise MakeBagError(f"frame {index}: the camera describes {hxw(camera.height, camera.width)} (HxW) "
                                   f"images but the image is {hxw(*rgb.shape[:2])}")
            stamp = start_ns + int(round(index * period_ns))
            if compressed:
                image_bytes = m.compressed_cdr(rgb, stamp, frame_id, fmt=compressed)
            else:
                image_bytes = m.image_cdr(rgb, "rgb8", stamp, frame_id)
            frame = [
                (conn_info, m.camera_info_cdr(camera, stamp, frame_id)),
                (conn_image, image_bytes),
                (conn_depth, m.image_cdr(metres, "32FC1", stamp, frame_id)),
                (conn_sem, m.image_cdr(labels, "mono8", stamp, frame_id)),
            ]
            for connection, data in frame:
                writer.write(connection, stamp, data)
                n_bytes += len(data)
            n_messages += len(frame)
            written += 1
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        writer.close()
    except BaseException:
        # Keep what was written: close the bag so that its frames stay readable.
        try:
            writer.close()
        except Exception:  # noqa: BLE001 - the original error is the one to report
            writer.abort()
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    seconds = time.perf_counter() - started
    return BagSummary(out, storage, written, n_messages, n_bytes, seconds, tuple(dataset.image_size),
                      interrupted=written < count)


def open_writer(out: "str | Path", storage: str = "mcap", chunk_bytes: int = MCAP_CHUNK_BYTES) -> Any:
    """A rosbags Writer (not yet opened) for a bag at `out`; mcap files go through McapStorage (CRCs)."""
    from rosbags.rosbag2 import StoragePlugin, Writer  # optional: pip install .[bags]

    writer = Writer(out, version=Writer.VERSION_LATEST,
                    storage_plugin=StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3)
    writer.STORAGE_PLUGINS = {**Writer.STORAGE_PLUGINS,
                              StoragePlugin.MCAP: functools.partial(McapStorage, chunk_bytes=chunk_bytes)}
    return writer


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm  # optional: pip install .[train]
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="frame", dynamic_ncols=True)


def open_source(data: Optional[str], fmt: str = "auto", split: str = "val", size: Optional[Sequence[int]] = None,
                num_classes: Optional[int] = None, count: int = 50, seed: int = 0,
                depth_scale: Optional[float] = None) -> Any:
    """The dataset split to write (synthetic scenes need no folder: `count` scenes of `seed`)."""
    if fmt == "synthetic":
        return open_dataset(None, split=split, format="synthetic", length=count, seed=seed,
                            size=size or (128, 256), num_classes=num_classes)
    if not data:
        raise MakeBagError("no dataset given: pass --data DIR (a Cityscapes copy or a preprocessed tree), "
                           "or --format synthetic to generate scenes")
    extra = {"depth_scale": depth_scale} if depth_scale is not None else {}
    return open_dataset(data, split=split, format=fmt, size=size, num_classes=num_classes, **extra)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mtan-make-bag",
        description="Write a dataset split as a rosbag2 (camera image, camera_info, depth and label ground truth).")
    parser.add_argument("--data", metavar="DIR", help="dataset folder: raw Cityscapes (leftImg8bit/, gtFine/, "
                                                      "disparity/, camera/) or the preprocessed .npy tree")
    parser.add_argument("--format", default="auto", choices=FORMATS,
                        help="dataset layout (auto: detect; synthetic: generate scenes, no --data needed)")
    parser.add_argument("--out", required=True, metavar="BAG", help="bag folder to create (must not exist)")
    parser.add_argument("--storage", default="mcap", choices=STORAGES, help="rosbag2 storage (default mcap)")
    parser.add_argument("--rate", type=float, default=m.DEFAULT_RATE_HZ, metavar="HZ",
                        help=f"frames per second of the stamps (default {m.DEFAULT_RATE_HZ:g}, the Cityscapes camera)")
    parser.add_argument("--compressed", nargs="?", const="jpeg", choices=("jpeg", "png"), default=None,
                        help="store the camera image as image_raw/compressed (jpeg by default, or png)")
    parser.add_argument("--split", default="val", help="dataset split (default val)")
    parser.add_argument("--limit", type=int, metavar="N", help="write only the first N frames")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                        help="frame size (default: the stored size for npy, 128 256 for raw and synthetic)")
    parser.add_argument("--classes", type=int, choices=(7, 19), help="label set (default: detected / 7)")
    parser.add_argument("--depth-scale", type=float, metavar="SCALE",
                        help="npy only: metres = SCALE / stored inverse depth (default: the Cityscapes value)")
    parser.add_argument("--count", type=int, default=50, metavar="N", help="synthetic: number of scenes (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="synthetic: scene seed (default 0)")
    parser.add_argument("--frame-id", default=m.FRAME_ID, help=f"header frame_id (default {m.FRAME_ID})")
    parser.add_argument("--start-time", type=float, metavar="SEC",
                        help="stamp of the first frame in seconds since the epoch (default: now)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bag folder at --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _remove_bag(out: Path) -> None:
    """Remove an existing bag folder, refusing anything that does not look like one."""
    if out.is_file():
        raise MakeBagError(f"'{out}' is a file, not a bag folder; remove it yourself or choose another --out")
    unexpected = [p.name for p in out.iterdir()
                  if not (p.name == "metadata.yaml" or p.suffix in (".mcap", ".db3", ".zstd")
                          or p.name.endswith((".db3-journal", ".db3-wal", ".db3-shm")))]
    if unexpected:
        raise MakeBagError(f"'{out}' holds {unexpected[:5]}, which is not a bag; not removing it")
    shutil.rmtree(out)


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("mtan-make-bag", lambda: _make(args), interrupted_hint=f"'{args.out}' may be incomplete")


def _make(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.limit is not None and args.limit <= 0:
        raise MakeBagError(f"--limit must be positive; got {args.limit}")
    if args.count <= 0:
        raise MakeBagError(f"--count must be positive; got {args.count}")
    if out.exists():
        if not args.overwrite:
            raise MakeBagError(f"'{out}' already exists; choose another --out or pass --overwrite")
        _remove_bag(out)
    dataset = open_source(args.data, args.format, args.split, args.size, args.classes, args.count, args.seed,
                          args.depth_scale)
    source = {"source": "synthetic" if args.format == "synthetic" else str(args.data),
              "format": args.format, "split": args.split,
              "dataset": dataset.describe() if hasattr(dataset, "describe") else type(dataset).__name__}
    start_ns = None if args.start_time is None else int(round(args.start_time * 1e9))
    try:
        summary = write_bag(dataset, out, storage=args.storage, rate=args.rate, compressed=args.compressed,
                            limit=args.limit, frame_id=args.frame_id, start_ns=start_ns,
                            progress=not args.no_progress, custom=source)
    except ImportError as exc:  # rosbags, mcap or OpenCV missing: the message says what to install
        raise MakeBagError(str(exc)) from None
    except OSError as exc:
        raise MakeBagError(f"cannot write '{out}': {exc}") from None
    print(f"wrote {summary.frames} frames ({summary.messages} messages, {summary.bytes / 1e6:.1f} MB, "
          f"{hxw(*summary.image_size)}) to '{summary.path}' ({summary.storage}) in {summary.seconds:.1f} s: "
          f"{summary.frames_per_s:.1f} frames/s, {summary.megabytes_per_s:.1f} MB/s")
    if summary.interrupted:
        print(f"interrupted: the bag holds the first {summary.frames} frames and is complete", file=sys.stderr)
        return 130
    print(f"play it: ros2 launch mtan_ros replay.launch.py bag:={summary.path} model_path:=<checkpoint>")
    return 0


if __name__ == "__main__":
    sys.exit(main())
