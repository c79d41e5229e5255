"""Console-script entry points of the ROS executables (`perception_node`, `bag_player`, `evaluator`).

Why a module of its own: importing a node module takes seconds (rclpy, torch, OpenCV). A
Ctrl-C or SIGTERM in that time, e.g. from `ros2 launch` shutting down because another
process failed, used to print a KeyboardInterrupt traceback from the middle of an import
(and a KeyboardInterrupt inside a C extension's import can even surface as an ImportError).
These entry points install the signal handling first, with nothing but the standard
library imported, and only then import the node and call its `main()`:

- while the node module and its model runtime (torch) are imported, SIGINT / SIGTERM are
  only recorded (`StopSignals`, mtan_ros.common.entry);
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
import sys
from typing import Callable, Optional

from mtan_ros.common.entry import EXIT_OK, EXIT_USER_ERROR, StopSignals

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


def run_quietly(module_name: str, preload: tuple[str, ...] = ()) -> int:
    """Import `preload` and `module_name`, run its main(); Ctrl-C / SIGTERM at any point end it with 0, quietly."""
    stop = StopSignals.install()
    try:
        for name in preload:
            importlib.import_module(name)
        module = importlib.import_module(module_name)
        if stop.received is not None:
            return EXIT_OK
        # From now on a signal interrupts whatever runs, as Python's default does (the node's
        # main() expects KeyboardInterrupt; rclpy's own handlers shut its context down first):
        # a model that is still loading must not delay the stop.
        stop.raising = True
        return module.main()
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception:
        if stop.received is not None:  # e.g. RCLError: the context was shut down under a node being built
            return EXIT_OK
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
        return EXIT_USER_ERROR
    sys.argv = [argv[0], *argv[1:]]
    return _RUNNERS[argv[0]]()


if __name__ == "__main__":
    sys.exit(main())
