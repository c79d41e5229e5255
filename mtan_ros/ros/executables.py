"""Console-script entry points of the ROS executables (`perception_node`, `bag_player`, `evaluator`).

Why a module of its own: importing a node module takes seconds (rclpy, torch, OpenCV). A
Ctrl-C or SIGTERM in that time, e.g. from `ros2 launch` shutting down because another
process failed, used to print a KeyboardInterrupt traceback from the middle of an import
(and a KeyboardInterrupt inside a C extension's import can even surface as an ImportError).
These entry points install the signal handling first, with nothing but the standard
library imported, and only then import the node and call its `main()`:

- while the node module is imported, SIGINT / SIGTERM are only recorded (`StopSignals`);
- perception_node, bag_player: a signal that came during the import ends the program at
  once with code 0. Later ones are rclpy's: it shuts the node's context down and main()
  ends; an error that this causes while the node is still being built ends it quietly
  with 0 too (before rclpy has installed its handlers a signal raises KeyboardInterrupt,
  which ends it the same way);
- evaluator: signals stay recorded; it notices them once it has started and still
  writes its report.

`python -m mtan_ros.ros.executables NAME [--ros-args ...]` runs entry NAME the same way.
"""
from __future__ import annotations

import importlib
import signal
import sys
import threading
from typing import Any, Callable, Optional

# Entry name -> module whose main(argv=None) -> int runs it.
ENTRIES = {
    "perception_node": "mtan_ros.ros.perception_node",
    "bag_player": "mtan_ros.ros.bag_player",
    "evaluator": "mtan_ros.ros.evaluator",
}
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_WORDS = {signal.SIGINT: "interrupted (SIGINT)", signal.SIGTERM: "terminated (SIGTERM)"}


class StopSignals:
    """Records SIGINT / SIGTERM instead of raising in the middle of whatever runs.

    For programs that must finish their work properly when asked to stop (the evaluator
    writes its report): they check `received` where it is safe to stop. With `raise_when`
    set, a signal also raises KeyboardInterrupt whenever raise_when() is true.
    """

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self.raise_when: Optional[Callable[[], bool]] = None
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
        if self.raise_when is not None and self.raise_when():
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


def _rclpy_does_not_handle_signals() -> bool:
    """True until rclpy.init() has installed rclpy's handlers (they shut the context down)."""
    signals = sys.modules.get("rclpy.signals")
    if signals is None:
        return True
    return signals.get_current_signal_handlers_options() == signals.SignalHandlerOptions.NO


def run_quietly(module_name: str) -> int:
    """Import `module_name` and run its main(); Ctrl-C / SIGTERM at any point end it with 0, no traceback."""
    stop = StopSignals.install()
    try:
        module = importlib.import_module(module_name)
        if stop.received is not None:
            return 0
        stop.raise_when = _rclpy_does_not_handle_signals
        return module.main()
    except KeyboardInterrupt:
        return 0
    except Exception:
        if stop.received is not None:  # e.g. RCLError: the context was shut down under a node being built
            return 0
        raise
    finally:
        stop.restore()


def run_reporting(module_name: str) -> int:
    """Import `module_name` and run main(stop=StopSignals): signals are recorded from the first instant."""
    stop = StopSignals.install()
    try:
        return importlib.import_module(module_name).main(stop=stop)
    finally:
        stop.restore()


def perception_node() -> int:
    """Console script `perception_node`."""
    return run_quietly(ENTRIES["perception_node"])


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
