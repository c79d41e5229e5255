"""The shape of every node's `main()`: init, build, run, and always shut down.

Why one helper: every node must turn its start-up errors into one line and exit
code 2 (`mtan_ros.common.entry`), treat Ctrl-C and an external shutdown as a
normal end (code 0), and destroy the node and the context on every path, without
a second Ctrl-C (`ros2 launch` forwards one after the terminal's) interrupting
that cleanup; written once, no node forgets a case.
"""
from __future__ import annotations

import signal
import threading
from typing import Callable, Optional, TypeVar

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

from mtan_ros.common.entry import EXIT_OK, EXIT_USER_ERROR
from mtan_ros.errors import MtanRosError

NodeT = TypeVar("NodeT", bound=Node)


def run_node(name: str, build: Callable[[], NodeT], run: Callable[[NodeT], Optional[int]],
             argv: Optional[list[str]] = None, *, close: Optional[Callable[[NodeT], None]] = None) -> int:
    """rclpy.init(argv), node = build(), return run(node) (None = 0); 2 after a package error (MtanRosError).

    `close` releases the node (default: `destroy_node`). An exception raised after the
    context was shut down (SIGTERM while the node was still being built) is a stop, not a bug.
    """
    rclpy.init(args=argv)
    node: Optional[NodeT] = None
    try:
        node = build()
        return run(node) or EXIT_OK
    except MtanRosError as exc:  # NodeStartupError, or any other error the user can fix
        (node.get_logger() if node is not None else rclpy.logging.get_logger(name)).error(str(exc))
        return EXIT_USER_ERROR
    except (KeyboardInterrupt, ExternalShutdownException):
        return EXIT_OK
    except Exception:
        if rclpy.ok():
            raise
        return EXIT_OK
    finally:
        previous = _ignore_stop_signals()
        try:
            if node is not None:
                (close or type(node).destroy_node)(node)
            rclpy.try_shutdown()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _ignore_stop_signals() -> dict:
    """Ignore SIGINT/SIGTERM while cleaning up (main thread only); returns the handlers to restore."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.getsignal(sig)
        signal.signal(sig, signal.SIG_IGN)
    return previous
