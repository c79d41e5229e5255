"""Console-script entry points of the ROS executables (`perception_node`, `bag_player`, `evaluator`).

Why a module of its own: importing a node module takes seconds (rclpy, torch, OpenCV). A
Ctrl-C or SIGTERM in that time, e.g. from `ros2 launch` shutting down because another
process failed, used to print a KeyboardInterrupt traceback from the middle of an import
(and a KeyboardInterrupt inside a C extension's import can even surface as an ImportError).
These entry points install the signal handling first, with nothing but the standard
library imported, and only then import the node and call its `main()`:

- while the node module and its model runtime (torch) are imported, SIGINT / SIGTERM are
  only recorded (`StopSignals`);
- perception_node, bag_player: a signal that came during the import ends the program at
  once with code 0. Later ones raise KeyboardInterrupt (SIGTERM too), after rclpy's own
  handlers have shut the node's context down, so that a model still loading does not
  delay the stop; whatever escapes main() then, KeyboardInterrupt or an error the stop
  caused while the node was being built, ends the program quietly with code 0;
- evaluator: signals stay recorded; it notices them once it has started and still
  writes its report;
- once main() has returned both signals are ignored: the program is ending.

Not covered: the interpreter's own start-up (and the ROS wheels' re-execution of it),
before any of this module runs; a signal then ends the process as Python's defaults do.

`python -m mtan_ros.ros.executables NAME [--ros-args ...]` runs entry NAME the same way.
"""
from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
from typing import Any, Callable, Optional

# Entry name -> module whose main(argv=None) -> int runs it.
ENTRIES = {
    "perception_node": "mtan_ros.ros.node.perception_node",
    "bag_player": "mtan_ros.ros.replay.bag_player",
    "evaluator": "mtan_ros.ros.replay.evaluator",
}
# Modules a node imports lazily (its model runtime) that are imported here too, while signals are
# only recorded: a KeyboardInterrupt raised inside torch's import (in a callback from C++) would
# abort the process ("terminate called after throwing ... error_already_set") instead of ending it.
# symbolic_shapes (with sympy) is what torch imports on the first max_unpool2d call, i.e. at warm-up.
PRELOAD = {"perception_node": ("mtan_ros.inference", "torch.fx.experimental.symbolic_shapes")}
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_WORDS = {signal.SIGINT: "interrupted (SIGINT)", signal.SIGTERM: "terminated (SIGTERM)"}


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


def run_quietly(module_name: str, preload: tuple[str, ...] = ()) -> int:
    """Import `preload` and `module_name`, run its main(); Ctrl-C / SIGTERM at any point end it with 0, quietly."""
    stop = StopSignals.install()
    try:
        for name in preload:
            importlib.import_module(name)
        module = importlib.import_module(module_name)
        if stop.received is not None:
            return 0
        # From now on a signal interrupts whatever runs, as Python's default does (the node's
        # main() expects KeyboardInterrupt; rclpy's own handlers shut its context down first):
        # a model that is still loading must not delay the stop.
        stop.raising = True
        return module.main()
    except KeyboardInterrupt:
        return 0
    except Exception:
        if stop.received is not None:  # e.g. RCLError: the context was shut down under a node being built
            return 0
        raise
    finally:
        stop.ignore_from_now()


def run_reporting(module_name: str) -> int:
    """Import `module_name` and run main(stop=StopSignals): signals are recorded from the first instant."""
    stop = StopSignals.install()
    try:
        return importlib.import_module(module_name).main(stop=stop)
    finally:
        stop.ignore_from_now()


def perception_node() -> int:
    """Console script `perception_node`."""
    return run_quietly(ENTRIES["perception_node"], PRELOAD["perception_node"])


def bag_player() -> int:
    """Console script `bag_player`."""
    return run_quietly(ENTRIES["bag_player"])


def evaluator() -> int:
    """Console script `evaluator`."""
    return run_reporting(ENTRIES["evaluator"])


_RUNNERS: dict[str, Callable[[], int]] = {"perception_node": perception_node, "bag_player": bag_player,
                                          "evaluator": evaluator}


def main(argv: Optional[list[str]] = None) -> int:
    """`python -m mtan_ros.ros.executables NAME [ARGS...]`: run entry NAME with ARGS as its command line."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in _RUNNERS:
        print(f"usage: python -m {__name__} {{{','.join(_RUNNERS)}}} [--ros-args ...]", file=sys.stderr)
        return 2
    sys.argv = [argv[0], *argv[1:]]
    return _RUNNERS[argv[0]]()


if __name__ == "__main__":
    sys.exit(main())
