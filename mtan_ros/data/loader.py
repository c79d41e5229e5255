"""A DataLoader whose worker processes fail the way the training process would.

A dataset error raised in a worker process (a NaN depth map, a truncated .npy)
reaches the training process as torch builds it: `type(error)(text)`, where the
text is "Caught DataError in DataLoader worker process 1." plus the worker's
whole traceback. Commands print an error's message as their one line, so the
user got the traceback (or, for classes that could not be rebuilt, a
RuntimeError). `DataLoader` here re-raises the worker's error with its own
line, so `--workers 2` ends exactly like `--workers 0`.
"""
from __future__ import annotations

import re
from typing import Any, Iterator

import torch

from mtan_ros.errors import MtanRosError

__all__ = ["DataLoader", "worker_error"]

_WORKER_TEXT = re.compile(r"Caught \w+ in DataLoader worker process \d+\.\s+Original Traceback")


def worker_error(error: MtanRosError) -> MtanRosError:
    """The error a worker raised, rebuilt from torch's re-raised text; `error` itself if it is not such a text.

    The worker's traceback ends with "<module>.<class>: <message>" (the package's
    messages are one line), so the message is what follows the last such prefix.
    """
    text = str(error)
    if not _WORKER_TEXT.match(text):
        return error
    cls = type(error)
    prefix = f"{cls.__module__}.{cls.__qualname__}: "
    at = text.rfind(prefix)
    if at < 0:
        return error
    line = text[at + len(prefix):].strip().split("\n", 1)[0].strip()
    return cls(line) if line else error


class DataLoader(torch.utils.data.DataLoader):
    """torch's DataLoader; a package error raised in a worker process comes out with its own one line."""

    def __iter__(self) -> Iterator[Any]:
        return _own_errors(super().__iter__())


def _own_errors(batches: Iterator[Any]) -> Iterator[Any]:
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except MtanRosError as exc:
            rebuilt = worker_error(exc)
            if rebuilt is exc:
                raise
            raise rebuilt from None
        yield batch
