"""The shape of a tool node's `main()`: init, build, run, and always shut down.

Why one helper: every node must turn its start-up errors into one line and exit
code 1, treat Ctrl-C and an external shutdown as a normal end (code 0), and destroy
the node and the context on every path; written once, no node forgets a case.
"""
from __future__ import annotations

from typing import Callable, Optional, TypeVar

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

from mtan_ros.errors import MtanRosError

NodeT = TypeVar("NodeT", bound=Node)


def run_node(name: str, build: Callable[[], NodeT], run: Callable[[NodeT], Optional[int]],
             argv: Optional[list[str]] = None) -> int:
    """rclpy.init(argv), node = build(), return run(node) (None = 0); 1 after a package error (MtanRosError)."""
    rclpy.init(args=argv)
    node: Optional[NodeT] = None
    try:
        node = build()
        return run(node) or 0
    except MtanRosError as exc:  # NodeStartupError, or any other error the user can fix
        (node.get_logger() if node is not None else rclpy.logging.get_logger(name)).error(str(exc))
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        return 0
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
