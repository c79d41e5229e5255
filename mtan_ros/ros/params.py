"""One way to declare, validate and change the parameters of every node of the package.

Each node lists its parameters as `ParamSpec`s: type, description, allowed range or
choices, and when a value takes effect:
- "runtime": applied to the next frame when set with `ros2 param set`;
- "configure": read when a managed node is configured; a change is refused while it
  is configured (clean it up, set the value, configure again);
- "startup": read once at start-up; declared read-only, so ROS itself refuses changes.
A number parameter (kind float) stays a double whatever is typed: an integer given on
the command line (`max_depth:=50`) or set later (`ros2 param set /node max_depth 60`)
is stored as 50.0 / 60.0, so the declared type never changes under the user's feet.
Default values live in one place per node: the perception node's in
config/perception.yaml (which its launch file also passes, so `ros2 run` and
`ros2 launch` agree), a tool node's in its spec table.
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import yaml
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node
from rclpy.parameter import Parameter

from mtan_ros.common.text import quote
from mtan_ros.errors import ConfigError
from mtan_ros.ros import share

APPLIES = ("runtime", "configure", "startup")
KIND_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
              list: "a list of strings"}
_PARAMETER_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
                    float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING,
                    list: ParameterType.PARAMETER_STRING_ARRAY}
# Nodes whose integer values for double parameters are turned into doubles before they are set.
_CONVERTING: "weakref.WeakSet[Node]" = weakref.WeakSet()


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: `default` None means "from the node's defaults file"."""

    name: str
    kind: type  # bool, int, float, str, or list (of strings)
    description: str
    default: Any = None
    range: Optional[tuple[float, float]] = None
    choices: Optional[tuple[str, ...]] = None
    applies: str = "runtime"

    def __post_init__(self) -> None:
        if self.applies not in APPLIES:
            raise ValueError(f"{self.name}: applies must be one of {APPLIES}, not {self.applies!r}")


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """The ROS descriptor: type (static, so describe always shows it), description, range, read-only for start-up.

    Integers for floating-point parameters are made doubles before ROS checks the type:
    see `declare_parameters`.
    """
    text = spec.description
    if spec.choices:
        text += f" One of: {', '.join(spec.choices)}."
    if spec.applies == "configure":
        text += " Read when the node is configured."
    elif spec.applies == "startup":
        text += " Read at start-up only."
    result = ParameterDescriptor(name=spec.name, type=_PARAMETER_TYPES[spec.kind], description=text,
                                 read_only=spec.applies == "startup")
    if spec.choices:
        result.additional_constraints = f"one of {', '.join(spec.choices)}"
    if spec.range is not None and spec.kind is float:
        result.floating_point_range = [FloatingPointRange(from_value=float(spec.range[0]),
                                                          to_value=float(spec.range[1]), step=0.0)]
    elif spec.range is not None and spec.kind is int:
        result.integer_range = [IntegerRange(from_value=int(spec.range[0]), to_value=int(spec.range[1]), step=1)]
    return result


def coerce(spec: ParamSpec, value: Any, source: str = "") -> Any:
    """`value` as the spec's type, inside its range and choices; ConfigError (one line) otherwise."""
    where = f"{source}: " if source else ""
    if spec.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if spec.kind is list:
        if value is None:  # ROS has no type for an empty list (`[]` in a params file): it arrives not set
            return []
        if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
            raise ConfigError(f"{where}parameter {spec.name} must be {KIND_WORDS[list]}, got {quote(value)}")
        return [item for item in value if item]
    if not isinstance(value, spec.kind) or (spec.kind is int and isinstance(value, bool)):
        hint = f", e.g. {spec.name}:={_example(spec.default)}" if spec.default is not None else ""
        raise ConfigError(f"{where}parameter {spec.name} must be {KIND_WORDS[spec.kind]}, got {quote(value)} "
                          f"({type(value).__name__}){hint}")
    if spec.kind is float and not math.isfinite(value):
        raise ConfigError(f"{where}parameter {spec.name} must be a finite number, got {value!r}")
    if spec.range is not None and not spec.range[0] <= value <= spec.range[1]:
        raise ConfigError(f"{where}parameter {spec.name} is outside its range {list(spec.range)}: {quote(value)}")
    if spec.choices is not None and value not in spec.choices:
        raise ConfigError(f"{where}parameter {spec.name} must be one of {', '.join(spec.choices)}; "
                          f"got {quote(value)}")
    return value


def declare_parameters(node: Node, specs: Iterable[ParamSpec],
                       defaults: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """Declare every spec on `node` (default: `defaults[name]`, else `spec.default`); return the values.

    Raises ConfigError with one line naming the parameter when a given value has the
    wrong type or lies outside its range or choices. Double parameters are stored as
    doubles when an integer is given, now (`-p max_depth:=50`) and later (set_parameters).
    """
    values = {}
    if node not in _CONVERTING:
        _CONVERTING.add(node)
        node.add_pre_set_parameters_callback(lambda parameters: _integers_as_doubles(node, parameters))
    for spec in specs:
        default = (defaults or {}).get(spec.name, spec.default)
        try:
            if spec.kind is float:
                values[spec.name] = _declare_double(node, spec, default)
                continue
            if spec.kind is list and not default:
                default = Parameter.Type.STRING_ARRAY  # an empty list has no type ROS could infer
            value = node.declare_parameter(spec.name, default, descriptor(spec)).value
        except ConfigError:
            raise
        except InvalidParameterValueException:
            raise ConfigError(f"parameter {spec.name} is outside its range {list(spec.range or ())}; "
                              f"the default is {quote(default)}") from None
        except (InvalidParameterTypeException, TypeError, ValueError):
            raise ConfigError(f"parameter {spec.name} must be {KIND_WORDS[spec.kind]}, "
                              f"e.g. {spec.name}:={_example(default)}") from None
        values[spec.name] = coerce(spec, value)
    return values


def _declare_double(node: Node, spec: ParamSpec, default: Any) -> float:
    """Declare a double parameter whose value (e.g. an override from the command line) may be an integer.

    rclpy applies no pre-set callback to declarations: the value is declared with a
    provisional dynamically typed descriptor, checked, then re-set as a double under
    the final, statically typed descriptor.
    """
    provisional = descriptor(spec)
    provisional.read_only, provisional.dynamic_typing = False, True
    value = coerce(spec, node.declare_parameter(spec.name, default, provisional).value)
    node.set_descriptor(spec.name, descriptor(spec),
                        alternative_value=Parameter(spec.name, Parameter.Type.DOUBLE, value).get_parameter_value())
    return value


def _integers_as_doubles(node: Node, parameters: list) -> list:
    """Pre-set callback: an integer for a parameter declared as a double becomes that double."""
    converted = []
    for parameter in parameters:
        if (parameter.type_ == Parameter.Type.INTEGER and node.has_parameter(parameter.name)
                and node.describe_parameter(parameter.name).type == ParameterType.PARAMETER_DOUBLE):
            parameter = Parameter(parameter.name, Parameter.Type.DOUBLE, float(parameter.value))
        converted.append(parameter)
    return converted


def _example(value: Any) -> str:
    if isinstance(value, (list, tuple, Parameter.Type)):
        return '"[front, rear]"'
    return str(value).lower() if isinstance(value, bool) else repr(value) if isinstance(value, str) else str(value)


def refuse_change(spec: ParamSpec, configured: bool, node_name: str) -> Optional[str]:
    """Why a set_parameters request for `spec` must be refused now, or None."""
    if spec.applies == "startup":
        return f"{spec.name} is read at start-up only: restart the node with the new value"
    if spec.applies == "configure" and configured:
        return (f"{spec.name} is read when the node is configured: deactivate and clean it up first "
                f"(`ros2 lifecycle set {node_name} deactivate`, then `cleanup`), set it, then configure and "
                "activate again")
    return None


def find_defaults_file(relative: str) -> Path:
    """A node's defaults file (e.g. config/perception.yaml), wherever the package is installed."""
    path = share.find(relative)
    if path is None:
        raise ConfigError(f"cannot find the parameter defaults {relative} (looked in "
                          + ", ".join(str(p) for p in share.candidates(relative)) + "); reinstall the package")
    return path


def load_defaults(path: Path | str, specs: Iterable[ParamSpec], node_name: str) -> dict[str, Any]:
    """The node's values from a ROS params YAML (`/**:` or `<node_name>:` sections).

    Every spec must have a value of its type, and the file may hold nothing else for
    this node, so that a typo there fails loudly instead of being ignored.
    """
    specs = list(specs)
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read parameter defaults {path}: {exc}") from None
    values: dict[str, Any] = {}
    for section in ("/**", node_name, "/" + node_name):
        params = (document.get(section) or {}).get("ros__parameters") or {}
        values.update(params)
    values.pop("use_sim_time", None)
    known = {spec.name for spec in specs}
    missing = [spec.name for spec in specs if spec.name not in values]
    unknown = sorted(name for name in values if name not in known and not name.startswith("qos_overrides."))
    if missing or unknown:
        raise ConfigError(f"{path}: missing parameters {missing}, unknown parameters {unknown}")
    return {spec.name: coerce(spec, values[spec.name], source=str(path)) for spec in specs}
