"""What every node of the suite shares on the ROS side: its parameters from one spec, and its main().

A node writes its parameters once, as a dict ``name -> Param(default, description, ...)`` (or the
short form ``(default, description)``), and reads them with ``declare_parameters(node, SPEC)``:
every parameter read-only, with its description, ranges where given, and lists that may be empty
declared with their element type (an empty list has no type in ROS parameters). Its ``main`` is
``run_node(NodeClass, "node_name", args)``: a bad configuration is one fatal line and exit status 1,
Ctrl-C / SIGTERM / an external shutdown end it cleanly (exit 0), and a node that must act on the way
out (the executor's final hold) gets ``on_exit(node, why)`` with SIGINT and SIGTERM its own.

rclpy is imported inside the functions: aloe_data stays importable (and its ROS-free modules
testable) where ROS is not installed.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Callable

ARRAY_TYPES = ("double", "integer", "string", "bool")
DOUBLE_HINT = " (a double parameter needs a decimal point in YAML, e.g. 50.0)"


@dataclass(frozen=True)
class Param:
    """One node parameter: default, description; ``range`` (lo, hi) for numbers; ``array_type``
    (double | integer | string | bool) for a list whose default may be empty."""

    default: object
    description: str = ""
    range: tuple | None = None
    array_type: str | None = None

    def __post_init__(self):
        if self.array_type is not None and self.array_type not in ARRAY_TYPES:
            raise ValueError(f"array_type must be one of {ARRAY_TYPES}, got {self.array_type!r}")
        if isinstance(self.default, (list, tuple)) and not self.default and self.array_type is None:
            raise ValueError("an empty list default needs array_type (ROS cannot type an empty list)")


def as_param(entry) -> Param:
    return entry if isinstance(entry, Param) else Param(*entry)


def dataclass_parameters(prefix: str, defaults) -> dict:
    """A spec of ``<prefix>.<field>`` for every field of a config dataclass instance, its values as
    the defaults (a node's device or controller section: ``joy.deadband``)."""
    import dataclasses

    return {f"{prefix}.{f.name}": Param(getattr(defaults, f.name), f"{type(defaults).__name__}.{f.name}")
            for f in dataclasses.fields(defaults)}


def declare_parameters(node, spec: dict, read_only: bool = True) -> dict:
    """Declare every parameter of ``spec`` on ``node``; return name -> value (lists as lists)."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
    from rclpy.exceptions import ParameterUninitializedException
    from rclpy.parameter import Parameter

    array_types = {"double": Parameter.Type.DOUBLE_ARRAY, "integer": Parameter.Type.INTEGER_ARRAY,
                   "string": Parameter.Type.STRING_ARRAY, "bool": Parameter.Type.BOOL_ARRAY}
    values = {}
    for name, entry in spec.items():
        param = as_param(entry)
        descriptor = ParameterDescriptor(description=param.description, read_only=read_only)
        if param.range is not None:
            lo, hi = param.range
            if isinstance(param.default, float) or isinstance(lo, float):
                descriptor.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi))]
            else:
                descriptor.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi))]
        default = list(param.default) if isinstance(param.default, tuple) else param.default
        if param.array_type is not None and not default:
            node.declare_parameter(name, array_types[param.array_type], descriptor)
            try:
                value = node.get_parameter(name).value
            except ParameterUninitializedException:
                value = []
        else:
            value = node.declare_parameter(name, default, descriptor).value
        values[name] = list(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "array" else value
    return values


class Terminated(Exception):
    """SIGTERM as an exception (``run_node(own_signals=True)``), so the way out runs as for Ctrl-C."""


def _raise_terminated(signum, frame):
    raise Terminated()


def run_node(make_node: Callable, name: str, args=None, *, config_errors: tuple = (ValueError,),
             after_start: Callable | None = None, spin: Callable | None = None,
             on_exit: Callable | None = None, own_signals: bool = False) -> int:
    """Init rclpy, build the node, spin it until Ctrl-C / SIGTERM / shutdown, tear down; -> exit status.

    make_node(): the node (an exception of ``config_errors`` or a parameter error = a bad
    configuration: one fatal line, exit 1). after_start(node): once built (autostart, scheduling).
    spin(node): instead of spinning a SingleThreadedExecutor until shutdown (a node that ends on its
    own). on_exit(node, why): before the node is destroyed, while the context is still up (why:
    SIGINT, SIGTERM, context shut down, stopped); a second Ctrl-C does not cut it short.
    own_signals: SIGINT / SIGTERM are handled here instead of by rclpy, whose handler shuts the
    context down at once (nothing could be published on the way out). The exit status is 1 when
    the node has a truthy ``error`` attribute at the end, else 0."""
    import rclpy
    from rclpy.exceptions import ParameterException
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    if own_signals:
        from rclpy.signals import SignalHandlerOptions

        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _raise_terminated)
    else:
        rclpy.init(args=args)
    try:
        node = make_node()
    except (*config_errors, ParameterException) as exc:  # bad configuration: say what, exit
        hint = DOUBLE_HINT if "expecting type 'DOUBLE'" in str(exc) else ""
        rclpy.logging.get_logger(name).fatal(f"cannot start: {exc}{hint}")
        rclpy.try_shutdown()
        return 1
    why = "stopped"
    try:
        if after_start is not None:
            after_start(node)
        if spin is not None:
            spin(node)
        else:
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            executor.spin()
    except KeyboardInterrupt:
        why = "SIGINT"
    except Terminated:
        why = "SIGTERM"
    except ExternalShutdownException:
        why = "context shut down"
    finally:
        if on_exit is not None:
            if own_signals:
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the way out short
            if rclpy.ok():
                try:
                    on_exit(node, why)
                except Exception as exc:  # noqa: BLE001 - log and go on shutting down
                    node.get_logger().error(f"on the way out: {exc}")
        node.destroy_node()
        rclpy.try_shutdown()
    return 1 if getattr(node, "error", None) else 0
