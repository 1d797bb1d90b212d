"""One parameter mechanism for every node: a spec declared read-only, typed, ranged, with empty lists."""

import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.exceptions import ParameterException  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from aloe_data.ros_node import Param, dataclass_parameters, declare_parameters  # noqa: E402

SPEC = {
    "rate_hz": Param(10.0, "a rate", range=(0.1, 100.0)),
    "depth": Param(5, "a depth", range=(1, 10)),
    "names": Param([], "maybe empty", array_type="string"),
    "bounds": Param([], "maybe empty", array_type="double"),
    "topic": ("/a", "short form: (default, description)"),
}


@pytest.fixture
def context():
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.shutdown(context=ctx)


def make(context, overrides=()):
    return rclpy.create_node("spec_test", context=context, parameter_overrides=list(overrides))


def test_a_spec_declares_every_parameter_read_only_with_its_description_and_empty_lists(context):
    node = make(context)
    values = declare_parameters(node, SPEC)
    assert values == {"rate_hz": 10.0, "depth": 5, "names": [], "bounds": [], "topic": "/a"}
    descriptor = node.describe_parameter("rate_hz")
    assert descriptor.read_only and descriptor.description == "a rate"
    assert descriptor.floating_point_range[0].to_value == 100.0
    assert node.describe_parameter("depth").integer_range[0].from_value == 1
    node.destroy_node()


def test_values_set_from_outside_arrive_typed_and_out_of_range_ones_are_refused(context):
    node = make(context, [Parameter("names", value=["x", "y"]), Parameter("bounds", value=[1.5]),
                          Parameter("rate_hz", value=50.0)])
    values = declare_parameters(node, SPEC)
    assert values["names"] == ["x", "y"] and values["bounds"] == [1.5] and values["rate_hz"] == 50.0
    node.destroy_node()
    bad = make(context, [Parameter("depth", value=99)])
    with pytest.raises(ParameterException):
        declare_parameters(bad, SPEC)
    bad.destroy_node()


def test_a_config_dataclass_becomes_a_prefixed_section_and_specs_are_checked():
    from dataclasses import dataclass, field

    @dataclass
    class Dev:
        gain: float = 0.5
        axes: list = field(default_factory=lambda: [1, 2])

    spec = dataclass_parameters("joy", Dev())
    assert set(spec) == {"joy.gain", "joy.axes"} and spec["joy.axes"].default == [1, 2]
    with pytest.raises(ValueError, match="empty list"):
        Param([], "no element type")
    with pytest.raises(ValueError, match="array_type"):
        Param([], "x", array_type="float32")
