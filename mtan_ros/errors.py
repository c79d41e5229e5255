"""The package's one error family.

Everything a user can fix (a missing file, a bad value, a damaged bag, a camera
that sends the wrong encoding) is raised as a subclass of `MtanRosError` whose
message is one line saying what is wrong and what to do about it. Commands catch
`MtanRosError` once (`mtan_ros.common.entry.run_command`) and print that line; any other
exception is a bug and keeps its traceback.

The area classes also derive from the built-in type that callers used to catch
(ValueError, RuntimeError), so `except ValueError` written against older
versions keeps working.
"""
from __future__ import annotations

import os
from typing import Optional, Union

PathLike = Union[str, "os.PathLike[str]"]


class MtanRosError(Exception):
    """Base of every error a user can act on; `str(error)` is one line.

    Errors cross process boundaries: a DataLoader worker's error is re-raised in the
    training process as `type(error)(message)`, and multiprocessing pickles them. So
    every subclass can be built from its one line alone, and pickling keeps the class
    and its attributes whatever a subclass's __init__ takes.
    """

    def __reduce__(self):
        return _rebuild, (type(self), self.args, dict(vars(self)))


class ConfigError(MtanRosError, ValueError):
    """A setting (command-line flag, YAML file, node parameter) that cannot be used."""


class DataError(MtanRosError, ValueError):
    """A dataset file or folder is missing, unreadable or has unexpected content.

    `path` is the offending file or folder; `str(error)` is a single line of the form
    "<path>: <what is wrong>; expected <what should be there>". `DataError(line)`, with
    no problem, rebuilds an error from such a line (path None), as a DataLoader does.
    """

    def __init__(self, path: Optional[PathLike], problem: Optional[str] = None, expected: Optional[str] = None):
        if problem is None:
            path, problem = None, str(path)
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        self.expected = expected
        text = problem if self.path is None else f"{self.path}: {problem}"
        if expected:
            text += f"; expected {expected}"
        super().__init__(" ".join(text.split()))


class CheckpointError(MtanRosError):
    """A checkpoint is missing, unreadable, truncated, foreign or inconsistent."""


class ExportError(MtanRosError):
    """A model cannot be exported in the requested format."""


class TrainingError(MtanRosError, RuntimeError):
    """Training cannot start or go on."""


class DeviceError(MtanRosError, RuntimeError):
    """The requested device does not exist here."""


class EvalError(MtanRosError, ValueError):
    """A checkpoint and a dataset do not fit together."""


class BagError(MtanRosError):
    """Base of the bag errors."""


class BagReadError(BagError):
    """A bag that cannot be opened or read at all."""


class BagCorruptError(BagReadError):
    """The bag is damaged; raised after every intact message was delivered (the places: `Bag.damage`).

    `messages_read` counts the messages handed out; `last_good_ns` is the log time
    of the last of them (None when there was none).
    """

    def __init__(self, message: str, messages_read: int = 0, last_good_ns: Optional[int] = None):
        super().__init__(message)
        self.messages_read = messages_read
        self.last_good_ns = last_good_ns


class MakeBagError(BagError):
    """Settings or data that cannot make a bag."""


class ImageConversionError(MtanRosError, ValueError):
    """An image message that cannot be used; `kind` groups similar problems for throttling."""

    def __init__(self, message: str, kind: str = "image") -> None:
        super().__init__(message)
        self.kind = kind


class NodeStartupError(MtanRosError):
    """A ROS node cannot start (bad parameter, missing or invalid checkpoint)."""


class LifecycleStateError(NodeStartupError):
    """Another node did not reach the lifecycle state a program waits for (or is not a lifecycle node)."""


class PlayerError(NodeStartupError):
    """The bag player cannot start or go on."""


class EvaluatorError(NodeStartupError):
    """The replay evaluator cannot start."""


class DemoError(MtanRosError):
    """The demo cannot go on."""


class StorageError(MtanRosError, OSError):
    """A file could not be written: the disk is full, a quota is used up, or an I/O error.

    Raised by `mtan_ros.common.files`; the line names the file, the space left on its
    file system and what to do. An OSError, as the failed write was.
    """


def _rebuild(cls: type, args: tuple, state: dict) -> MtanRosError:
    """An unpickled error: its class, message and attributes, without calling the subclass's __init__."""
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error
