"""Declaring a tool node's parameters from a {name: (default, description)} table.

The bag player and the evaluator take a handful of settings each; this gives
both the same behaviour: typed descriptors, integers accepted where a float is
expected (`rate:=2`), and one sentence naming the parameter when a value has
the wrong type.
"""
from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rclpy.exceptions import InvalidParameterTypeException
from rclpy.node import Node

PARAMETER_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
                   float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING,
                   list: ParameterType.PARAMETER_STRING_ARRAY}


def declare_plain_parameters(node: Node, table: dict[str, tuple[Any, str]]) -> dict[str, Any]:
    """Declare every parameter of `table` on `node` and return their values.

    Raises ValueError with a one-line message for a value of the wrong type.
    """
    values = {}
    for name, (default, description) in table.items():
        floating = isinstance(default, float)
        descriptor = ParameterDescriptor(name=name, type=PARAMETER_TYPES[type(default)], description=description,
                                         dynamic_typing=floating)
        try:
            value = node.declare_parameter(name, default, descriptor).value
            values[name] = float(value) if floating else value
        except (InvalidParameterTypeException, TypeError, ValueError):
            example = str(default).lower() if isinstance(default, bool) else repr(default)
            raise ValueError(f"parameter {name} must be {type(default).__name__}, e.g. {name}:={example}") from None
    return values
