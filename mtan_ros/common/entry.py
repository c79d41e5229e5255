"""How every console command and node ends: one exit-code convention, one-line errors, quiet stops.

The convention (README, "Exit codes"):
  0    done; for a node, a requested stop (Ctrl-C, SIGTERM, `ros2 launch` shutting down) is done
  1    a bug: an unexpected exception, whose traceback is kept
  2    a problem the user can fix (`MtanRosError`: bad input, configuration, environment), one line
  130  a console command interrupted by Ctrl-C before it finished

Console commands hand their body to `run_command`; nodes go through
`mtan_ros.ros.executables`, which uses `StopSignals` from here; both report errors
with `first_line`. Standard library only, so that signal handling can be installed
before anything slow is imported.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any, Callable, Optional

from mtan_ros.errors import MtanRosError

EXIT_OK = 0
EXIT_BUG = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
# Kept for callers written against the first names.
USER_ERROR_EXIT = EXIT_USER_ERROR
INTERRUPTED_EXIT = EXIT_INTERRUPTED

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_WORDS = {signal.SIGINT: "interrupted (SIGINT)", signal.SIGTERM: "terminated (SIGTERM)"}
# Errors from libraries can carry whole tensors or file contents; a log line should not.
FIRST_LINE_LIMIT = 300


def first_line(exc: BaseException, limit: int = FIRST_LINE_LIMIT) -> str:
    """The first line of an exception's message (its type name when empty), cut to `limit` characters."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def run_command(prog: str, body: Callable[[], Optional[int]], *, interrupted_hint: str = "") -> int:
    """Run `body` and return its exit code (None counts as 0).

    MtanRosError -> "<prog>: error: <message>" on stderr and 2;
    KeyboardInterrupt -> "<prog>: interrupted[; hint]" and 130. Anything else is a bug
    and keeps its traceback.
    """
    try:
        code = body()
    except MtanRosError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted" + (f"; {interrupted_hint}" if interrupted_hint else ""), file=sys.stderr,
              flush=True)
        return EXIT_INTERRUPTED
    return EXIT_OK if code is None else int(code)


class StopSignals:
    """Records SIGINT / SIGTERM instead of raising in the middle of whatever runs.

    For programs that must finish their work properly when asked to stop (the evaluator
    writes its report): they check `received` where it is safe to stop. With `raising`
    set, a signal also raises KeyboardInterrupt, as Python's default handler does.
    """

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self.raising = False
        self._previous: dict[int, Any] = {}

    @classmethod
    def install(cls) -> "StopSignals":
        """Handlers for SIGINT and SIGTERM (main thread only; elsewhere nothing is installed)."""
        stop = cls()
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                stop._previous[sig] = signal.signal(sig, stop._on_signal)
        return stop

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received = signum
        if self.raising:
            if frame is not None and frame.f_code.co_filename.startswith("<frozen importlib"):
                # Raised inside the import machinery (e.g. a module lock's weakref callback) the interrupt
                # would be printed as "Exception ignored" and lost: deliver it again in a moment instead.
                threading.Timer(0.02, os.kill, (os.getpid(), signum)).start()
                return
            raise KeyboardInterrupt

    def describe(self) -> str:
        """The signal in words, e.g. "interrupted (SIGINT)"; "" when none was received."""
        if self.received is None:
            return ""
        return _WORDS.get(self.received, f"stopped by signal {self.received}")

    def restore(self) -> None:
        """Put back the handlers that were there before `install`."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def ignore_from_now(self) -> None:
        """Ignore both signals for the rest of the program: it is ending.

        `ros2 launch` sends its own SIGINT after the terminal's; arriving while the interpreter
        shuts down (which resets Python handlers to the default action) it would end the
        process with -2 instead of its exit code.
        """
        if self._previous:
            for sig in STOP_SIGNALS:
                signal.signal(sig, signal.SIG_IGN)
            self._previous = {}
