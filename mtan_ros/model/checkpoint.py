"""Self-describing checkpoints that load without unpickling arbitrary objects.

A checkpoint is one zip file written by `torch.save` holding only tensors and
plain containers: the weights, a `CheckpointMeta` (architecture and its
arguments, classes and colours, input size, normalisation, depth encoding,
metrics) and, for training runs, the optimiser/scheduler/weighting/RNG state
needed to resume. It is read with `torch.load(weights_only=True)`, so a file
crafted to run code on load is refused instead of executed.

Nothing in a file is trusted to size an allocation: the metadata is checked
against fixed limits, and the weights against the architecture built on
PyTorch's "meta" device (shapes only, no memory), before a real model exists.
A file that is not a regular file, not a zip archive, or whose archive index
does not fit its size is refused before `torch.load` sees it.
"""
from __future__ import annotations

import math
import os
import pickle
import re
import stat
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import torch
from torch.overrides import TorchFunctionMode

from mtan_ros.common.files import atomic_write
from mtan_ros.common.files import remove_stale_temporaries  # noqa: F401 (re-exported)
from mtan_ros.common.text import quote_path
from mtan_ros.depth_encoding import DepthEncoding
from mtan_ros.errors import CheckpointError  # noqa: F401 (re-exported)
from mtan_ros.model import ARCHITECTURES, INPUT_MULTIPLE, build_model
from mtan_ros.model.tasks import validate_tasks

FORMAT = "mtan_ros.checkpoint"
VERSION = 1

# Limits a checkpoint's metadata must respect. They bound what a file can make the
# loader allocate: the network's size follows from width and tasks, the per-frame
# buffers from input_size (2048x1024 is a full Cityscapes frame).
MIN_WIDTH = 1 / 64
MAX_WIDTH = 2.0
MAX_INPUT_SIDE = 2048
MAX_INPUT_PIXELS = 2048 * 1024
MAX_TASKS = 8
MAX_TASK_CHANNELS = 255  # class ids travel as mono8 images, where 255 means void
MAX_TASK_NAME = 64

_GET_ONE = "use a checkpoint written by `mtan-train` (best.pt or last.pt in its --out folder)"
_NOT_FOUND = ("train one with `mtan-train --data DIR --out DIR` (or run `make demo`) and pass its best.pt")


@dataclass(frozen=True)
class ModelSpec:
    """Which model to build: `mtan_ros.model.build_model(arch, tasks, width)`.

    Construction checks the values against the limits above, so a spec that
    exists can be built without exhausting memory.
    """

    arch: str = "mtan"
    tasks: dict[str, int] = field(default_factory=lambda: {"semantic": 7, "depth": 1})
    width: float = 1.0

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.arch!r}; this mtan_ros builds {', '.join(ARCHITECTURES)}")
        validate_tasks(self.tasks)
        if len(self.tasks) > MAX_TASKS:
            raise ValueError(f"{len(self.tasks)} tasks; at most {MAX_TASKS} are supported")
        for name, channels in self.tasks.items():
            if len(name) > MAX_TASK_NAME:
                raise ValueError(f"task name {name[:20]!r}... is longer than {MAX_TASK_NAME} characters")
            if channels > MAX_TASK_CHANNELS:
                raise ValueError(f"task {name!r} has {channels} output channels; at most {MAX_TASK_CHANNELS} "
                                 "are supported (class ids are published as mono8 images, 255 = void)")
        width = self.width
        if isinstance(width, bool) or not isinstance(width, (int, float)) or not math.isfinite(width) \
                or not MIN_WIDTH <= width <= MAX_WIDTH:
            raise ValueError(f"width {width!r} is outside the supported range {MIN_WIDTH:g}..{MAX_WIDTH:g} "
                             "(1.0 = the paper's network)")

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, "tasks": dict(self.tasks), "width": float(self.width)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelSpec":
        tasks = data["tasks"]
        if not isinstance(tasks, dict):
            raise ValueError(f"tasks must be a dict of task name -> output channels, got {tasks!r:.60}")
        return cls(arch=str(data["arch"]), tasks={str(k): _integer(v, f"task {k!r}") for k, v in tasks.items()},
                   width=_number(data["width"], "width"))


@dataclass(frozen=True)
class CheckpointMeta:
    """Everything needed to use the weights without guessing.

    `input_size` is (height, width) of the images the model was trained on:
    multiples of 32 (five 2x poolings), each side at most MAX_INPUT_SIDE and
    at most MAX_INPUT_PIXELS in all. `mean`/`std` normalise RGB scaled to
    [0, 1]; `depth` says how the depth output relates to metres.
    """

    model: ModelSpec
    class_names: list[str]
    class_colors: list[tuple[int, int, int]]
    input_size: tuple[int, int]
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    depth: DepthEncoding = field(default_factory=DepthEncoding)
    metrics: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.model, ModelSpec):
            raise ValueError(f"model must be a ModelSpec, got {type(self.model).__name__}")
        num_classes = self.model.tasks.get("semantic")
        if num_classes is not None and len(self.class_names) != num_classes:
            raise ValueError(f"{len(self.class_names)} class names for a {num_classes}-class model "
                             "(one name per semantic output channel)")
        if not all(isinstance(name, str) for name in self.class_names):
            raise ValueError("class names must be strings")
        if len(self.class_colors) != len(self.class_names):
            raise ValueError(f"{len(self.class_colors)} class colours for {len(self.class_names)} classes")
        for colour in self.class_colors:
            if len(colour) != 3 or not all(_is_int(v) and 0 <= v <= 255 for v in colour):
                raise ValueError(f"class colours must be three integers 0..255, got {colour!r:.40}")
        check_input_size(self.input_size)
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) != 3 or not all(_is_number(v) and math.isfinite(v) for v in values):
                raise ValueError(f"{name} must be three finite numbers (R, G, B), got {values!r:.60}")
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {tuple(self.std)}")
        if not isinstance(self.depth, DepthEncoding):
            raise ValueError(f"depth must be a DepthEncoding, got {type(self.depth).__name__}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.to_dict(),
            "class_names": list(self.class_names),
            "class_colors": [list(map(int, c)) for c in self.class_colors],
            "input_size": [int(v) for v in self.input_size],
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "depth": self.depth.to_dict(),
            "metrics": {str(k): float(v) for k, v in self.metrics.items()},
            "info": dict(self.info),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CheckpointMeta":
        return cls(
            model=ModelSpec.from_dict(data["model"]),
            class_names=[str(n) for n in _items(data, "class_names")],
            class_colors=[tuple(_integer(v, "class colour") for v in _items({"colour": c}, "colour"))
                          for c in _items(data, "class_colors")],
            input_size=tuple(_integer(v, "input_size") for v in _items(data, "input_size")),
            mean=tuple(_number(v, "mean") for v in _items(data, "mean")),
            std=tuple(_number(v, "std") for v in _items(data, "std")),
            depth=DepthEncoding.from_dict(data["depth"]),
            metrics={str(k): float(v) for k, v in data.get("metrics", {}).items()},
            info=dict(data.get("info", {})),
        )


def check_input_size(size: Any) -> tuple[int, int]:
    """(height, width) as ints, or ValueError: two positive multiples of 32 within the limits."""
    if len(size) != 2 or not all(_is_int(v) and v > 0 for v in size):
        raise ValueError(f"input_size must be two positive integers (height, width), got {size!r:.60}")
    height, width = (int(v) for v in size)
    if height % INPUT_MULTIPLE or width % INPUT_MULTIPLE:
        m = INPUT_MULTIPLE
        raise ValueError(f"input_size {height}x{width} is not a multiple of {m} on both sides (the network "
                         f"halves it five times); the nearest valid size is "
                         f"{max(m, round(height / m) * m)}x{max(m, round(width / m) * m)}")
    if max(height, width) > MAX_INPUT_SIDE or height * width > MAX_INPUT_PIXELS:
        raise ValueError(f"input_size {height}x{width} is too large: each side must be at most {MAX_INPUT_SIDE} "
                         f"and the area at most {MAX_INPUT_PIXELS} pixels (2048x1024)")
    return height, width


@dataclass
class Checkpoint:
    meta: CheckpointMeta
    state_dict: dict[str, Any]
    training_state: dict[str, Any] | None = None
    # (spec, shape-only model) from the last check_weights, so that building does not construct it twice.
    _shapes: tuple[ModelSpec, Any] | None = field(default=None, init=False, repr=False, compare=False)


# --- saving --------------------------------------------------------------------------------

def save_checkpoint(path: str | os.PathLike, state_dict: dict[str, Any], meta: CheckpointMeta,
                    training_state: dict[str, Any] | None = None) -> Path:
    """Write atomically (mtan_ros.common.files.atomic_write): a temporary file in the same folder, fsynced,
    then renamed.

    A process killed at any moment leaves either the previous file or the new
    one, never a half-written checkpoint under the final name; the temporary
    files such a kill leaves behind are removed by the next save to the same
    name. A full disk is a one-line StorageError and the previous file stays.
    The file gets the permissions of any newly created file (0666 minus the
    umask), so a node running as another user can read it.
    """
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "meta": meta.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "training_state": training_state,
    }
    with atomic_write(path) as handle:
        torch.save(payload, handle)
    return Path(path)


# --- loading -------------------------------------------------------------------------------

def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> Checkpoint:
    """Read a checkpoint, refusing anything that is not a plain, consistent mtan_ros checkpoint.

    Every refusal is a one-line CheckpointError. The metadata and the weights'
    names and shapes are verified here (see `check_weights`), so a checkpoint
    this returns can be built without surprises.
    """
    path = Path(path)
    with _open_regular_file(path) as handle:
        _check_container(path, handle)
        payload = _torch_load(path, handle, map_location)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{quote_path(path)} is a PyTorch file but not an mtan_ros checkpoint (no '{FORMAT}' marker); a "
            "reference-code state dict can be converted with mtan_ros.model.load_official_state_dict")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {quote_path(path)} has format version {payload.get('version')!r:.20}; "
                              f"this mtan_ros reads version {VERSION}")
    try:
        meta = CheckpointMeta.from_dict(payload["meta"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        detail = f"missing {exc}" if isinstance(exc, KeyError) else _one_line(str(exc))
        raise CheckpointError(f"checkpoint {quote_path(path)} has invalid metadata: {detail}; {_GET_ONE}") from None
    state_dict = payload.get("state_dict")
    if not isinstance(state_dict, dict) or not state_dict:
        raise CheckpointError(f"checkpoint {quote_path(path)} has no weights; {_GET_ONE}")
    checkpoint = Checkpoint(meta=meta, state_dict=state_dict, training_state=payload.get("training_state"))
    check_weights(checkpoint, source=f"checkpoint {quote_path(path)}")
    return checkpoint


def check_weights(checkpoint: Checkpoint, source: str = "checkpoint"):
    """The checkpoint's model built on the "meta" device, after checking that the weights fit it.

    Building on "meta" records every parameter's shape without allocating
    memory, so a file whose metadata asks for a huge network is refused here,
    at no cost, instead of growing the process. Raises CheckpointError naming
    the first mismatches and both sizes.
    """
    spec = checkpoint.meta.model
    if checkpoint._shapes is not None and checkpoint._shapes[0] == spec:
        model = checkpoint._shapes[1]
    else:
        try:
            with torch.device("meta"), _skip_random_init_mode():
                model = build_model(spec.arch, dict(spec.tasks), spec.width)
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{source}: cannot build its model: {_one_line(str(exc))}") from None
        checkpoint._shapes = (spec, model)
    expected = model.state_dict()
    given = checkpoint.state_dict
    bad_keys = [k for k, v in given.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad_keys:
        raise CheckpointError(f"{source}: its weights hold {len(bad_keys)} entries that are not named tensors "
                              f"(e.g. {bad_keys[0]!r:.60}); {_GET_ONE}")
    wrong = [(k, v, given[k]) for k, v in expected.items() if k in given and not _fits(v, given[k])]
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    if not (wrong or missing or unexpected):
        return model
    needed = sum(v.numel() for v in expected.values())
    held = sum(v.numel() for v in given.values())
    problems = []
    if needed != held:
        problems.append(f"it needs {_count(needed)} values, the file holds {_count(held)}")
    for key, want, got in wrong[:2]:
        problems.append(f"width {float(spec.width)} needs {key} of shape {_describe(want)}, "
                        f"the file has {_describe(got)}")
    if len(wrong) > 2:
        problems.append(f"{len(wrong) - 2} more tensors differ")
    if missing:
        problems.append(f"missing {len(missing)} weights (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected weights (e.g. {unexpected[0]:.80})")
    raise CheckpointError(f"{source}: weights do not fit a {spec.arch} model with tasks {dict(spec.tasks)} and "
                          f"width {float(spec.width)}: " + "; ".join(problems)
                          + f"; its metadata does not describe its weights, {_GET_ONE}")


def build_model_from_checkpoint(checkpoint: Checkpoint, source: str = "checkpoint"):
    """The checkpoint's architecture with its weights loaded, on the CPU in eval mode.

    The weights are checked against the architecture before any memory is
    allocated. The shape-only model then receives CPU copies of the file's
    tensors, in the model's own dtypes (no random initialisation that would
    be overwritten, and no aliasing of `checkpoint.state_dict`).
    """
    model = check_weights(checkpoint, source)
    checkpoint._shapes = None  # the model is about to receive real tensors
    target = model.state_dict()
    if not all(name in target for name, _ in model.named_buffers()):
        # A buffer the file does not hold would stay on "meta": build the model the ordinary way.
        spec = checkpoint.meta.model
        model = build_model(spec.arch, dict(spec.tasks), spec.width)
    weights = {k: v.to(device="cpu", dtype=target[k].dtype, copy=True) for k, v in checkpoint.state_dict.items()}
    try:
        model.load_state_dict(weights, strict=True, assign=True)
    except RuntimeError as exc:
        spec = checkpoint.meta.model
        raise CheckpointError(f"{source}: weights do not fit a {spec.arch} model with tasks {dict(spec.tasks)} "
                              f"and width {float(spec.width)}: {_one_line(str(exc))[:300]}") from None
    return model.eval()


def _skip_random_init_mode():
    """A torch function mode that makes in-place random initialisation of meta tensors a no-op.

    Random values mean nothing on the meta device, and the first `normal_` on it
    imports torch._dynamo (3-6 s), which would add that to every model load.
    """
    skipped = {torch.Tensor.normal_, torch.Tensor.uniform_}

    class SkipRandomInit(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func in skipped and args and getattr(args[0], "is_meta", False):
                return args[0]
            return func(*args, **(kwargs or {}))

    return SkipRandomInit()


def _fits(want, got) -> bool:
    return tuple(got.shape) == tuple(want.shape) and got.is_floating_point() == want.is_floating_point()


def _describe(tensor) -> str:
    shape = "[" + ",".join(str(v) for v in tensor.shape) + "]"
    return shape if tensor.is_floating_point() else f"{shape} ({tensor.dtype})"


def _count(n: int) -> str:
    return f"{n / 1e6:.1f} M" if n >= 100_000 else f"{n:,}"


_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


@contextmanager
def _open_regular_file(path: Path) -> Iterator[BinaryIO]:
    """The file opened for reading, after checking (with fstat, on that descriptor) that it is a regular file."""
    kind = _file_kind(path)  # stat only: FIFOs and devices are never opened
    if kind is not None:
        raise CheckpointError(f"checkpoint {quote_path(path)} is {kind}, not a checkpoint file; {_hint_for(path)}")
    try:
        # O_NONBLOCK: should the path have become a FIFO since the stat, open() must not wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise CheckpointError(f"checkpoint {quote_path(path)} cannot be opened ({exc.strerror}); check its "
                              "permissions or choose another file") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise CheckpointError(f"checkpoint {quote_path(path)} is "
                              f"{_KINDS.get(stat.S_IFMT(mode), 'not a regular file')}, "
                              f"not a checkpoint file; {_hint_for(path)}")
    os.set_blocking(fd, True)
    with os.fdopen(fd, "rb") as handle:
        yield handle


def _file_kind(path: Path) -> str | None:
    """None for a regular file, else what the path is, in words; raises CheckpointError if it is absent."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            raise CheckpointError(f"checkpoint {quote_path(path)} is a symlink to {quote_path(os.readlink(path))}, "
                                  "which does not "
                                  f"exist; {_NOT_FOUND}") from None
        raise CheckpointError(f"checkpoint {quote_path(path)} not found; {_NOT_FOUND}") from None
    except OSError as exc:
        raise CheckpointError(f"checkpoint {quote_path(path)} cannot be examined ({exc.strerror}); check the path and "
                              "its folders' permissions") from None
    if stat.S_ISREG(mode):
        return None
    kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
    if os.path.islink(path):
        kind += f" (a symlink to {quote_path(os.path.realpath(path))})"
    return kind


def _hint_for(path: Path) -> str:
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return f"pass the file inside it, e.g. {quote_path(path / name)}"
    return f"set it to a .pt file written by `mtan-train` ({_NOT_FOUND})"


def _check_container(path: Path, handle: BinaryIO) -> None:
    """Refuse, from the first bytes and the zip index, what torch.load should never be given.

    torch.save writes an uncompressed zip archive; anything else is named
    for what it is. The legacy (pre-zip) PyTorch format is refused as well:
    its loader allocates every storage at the size the file declares.
    """
    size = os.fstat(handle.fileno()).st_size
    head = handle.read(512)
    handle.seek(0)
    if not head.startswith(b"PK"):
        raise CheckpointError(f"{quote_path(path)} is not a PyTorch checkpoint ({_what_is(head, size)}); "
                              f"{_GET_ONE}")
    try:
        with zipfile.ZipFile(handle) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {quote_path(path)} is corrupt or truncated (a zip archive without a "
                              "readable "
                              f"index: {_one_line(str(exc)) or type(exc).__name__}); re-copy it or use the other "
                              "of last.pt/best.pt") from None
    finally:
        handle.seek(0)
    names = [e.filename for e in entries]
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        raise CheckpointError(f"{quote_path(path)} is a TorchScript archive (torch.jit.save), not a checkpoint; "
                              f"{_GET_ONE}")
    if not any(n.endswith("data.pkl") for n in names):
        raise CheckpointError(f"{quote_path(path)} is not a PyTorch checkpoint (a zip archive without data.pkl); "
                              f"{_GET_ONE}")
    if any(e.compress_type != zipfile.ZIP_STORED for e in entries):
        raise CheckpointError(f"{quote_path(path)} is not a PyTorch checkpoint (a zip archive with compressed "
                              "entries, which "
                              f"torch.save never writes); {_GET_ONE}")
    declared = sum(e.file_size for e in entries)
    if declared > size or any(e.header_offset + e.file_size > size for e in entries):
        raise CheckpointError(f"checkpoint {quote_path(path)} is corrupt or truncated (its index declares "
                              f"{declared} bytes "
                              f"of data in a {size}-byte file); re-copy it or use the other of last.pt/best.pt")


def _what_is(head: bytes, size: int) -> str:
    """A few words on what a file that is not a zip archive holds."""
    if size == 0:
        return "the file is empty"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a pickle: a legacy-format PyTorch file or a plain pickle, which is never unpickled here"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "a tar archive, e.g. a legacy-format PyTorch file"
    if head[:2] == b"\x1f\x8b":
        return "gzip-compressed data"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:  # tolerate only a character cut by the 512-byte read
        text = head[:exc.start].decode("utf-8") if len(head) == 512 and exc.start > 508 else None
    if text is not None and all(c.isprintable() or c in "\t\r\n" for c in text):
        return f"a text file starting {' '.join(text.split())[:40]!r}"
    return f"unrecognised binary data starting with bytes {head[:8].hex(' ')}"


def _torch_load(path: Path, handle: BinaryIO, map_location: Any) -> Any:
    try:
        return torch.load(handle, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _unpickling_reason(exc)
        if any(word in reason for word in ("GLOBAL", "allowlist", "add_safe_globals", "must be imported")):
            raise CheckpointError(
                f"checkpoint {quote_path(path)} holds objects that are not plain tensors or containers and was refused "
                f"for safety ({reason}); {_GET_ONE}") from None
        raise CheckpointError(f"checkpoint {quote_path(path)} is corrupt or truncated (unreadable contents: {reason}); "
                              "re-copy it or use the other of last.pt/best.pt") from None
    except Exception as exc:  # torch raises many types for damaged files; all mean the same here
        detail = _one_line(str(exc))[:200] or "no detail"
        raise CheckpointError(
            f"checkpoint {quote_path(path)} is corrupt or truncated ({type(exc).__name__}: {detail}); "
            "re-copy it or use the other of last.pt/best.pt") from None


def _unpickling_reason(exc: pickle.UnpicklingError) -> str:
    """The first line of the weights-only unpickler's own reason, without torch's advice around it."""
    original = exc.__context__  # torch re-raises with a longer message `from None`; the reason is the original
    text = str(original) if isinstance(original, pickle.UnpicklingError) else str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    return _one_line(text) or type(exc).__name__


def _one_line(text: str) -> str:
    """The first non-empty line of `text`, with runs of white space collapsed."""
    for line in text.splitlines():
        if line.strip():
            return " ".join(line.split())
    return ""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value: Any, what: str) -> int:
    """An int from a file, refusing floats with a fraction, strings and booleans instead of truncating them."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if not _is_int(value):
        raise ValueError(f"{what} must be an integer, got {value!r:.40}")
    return value


def _items(data: dict[str, Any], key: str) -> list[Any]:
    """data[key] as a list, or ValueError naming the field (a file may hold anything there)."""
    value = data[key]
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{key} must be a list, got {value!r:.40}")
    return list(value)


def _number(value: Any, what: str) -> float:
    if not _is_number(value):
        raise ValueError(f"{what} must be a number, got {value!r:.40}")
    return float(value)


__all__ = [
    "Checkpoint", "CheckpointError", "CheckpointMeta", "FORMAT", "MAX_INPUT_PIXELS", "MAX_INPUT_SIDE",
    "MAX_WIDTH", "MIN_WIDTH", "ModelSpec", "VERSION", "build_model_from_checkpoint", "check_input_size",
    "check_weights", "load_checkpoint", "remove_stale_temporaries", "save_checkpoint",
]
