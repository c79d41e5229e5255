"""Run a C library call with the process's stderr (fd 2) captured, keeping the lines it claims.

Why: OpenCV's libjpeg and libpng report corrupt data by printing to fd 2 and then
returning an image anyway. Printed lines name no topic, are not throttled, and are
the only sign that the frame is damaged. Capturing fd 2 around the call turns them
into a value the caller can refuse the frame with; lines the call did not write
(another thread logging meanwhile) are written back to fd 2. ROS-free.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from typing import Callable, TypeVar

T = TypeVar("T")
# fd 2 is process-wide: one capture at a time, or a second would steal the first one's lines.
_LOCK = threading.Lock()


def call_claiming_stderr(func: Callable[[], T], claim: re.Pattern[str]) -> tuple[T, list[str]]:
    """func()'s result and the lines written to fd 2 during the call that start with a `claim` match.

    Every other line written meanwhile goes back to fd 2 after the call (all of them
    when func raises). A temporary file, not a pipe, receives the output, so a call
    that prints a lot never blocks.
    """
    claimed: list[str] = []
    with _LOCK, tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        finished = False
        try:
            result = func()
            finished = True
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            others = []
            for line in sink.read().decode("utf-8", errors="replace").splitlines(keepends=True):
                (claimed if finished and claim.match(line) else others).append(line)
            _write_fd2("".join(others))
    return result, [line.rstrip("\n") for line in claimed]


def _write_fd2(text: str) -> None:
    data = text.encode("utf-8", errors="replace")
    while data:
        data = data[os.write(2, data):]
