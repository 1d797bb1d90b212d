"""The one rosbags type registration: works from installed .msg files, fails clearly otherwise."""

from pathlib import Path

import pytest
from rosbags.typesys import Stores, get_typestore

from aloe_data.bag_layout import ALOE_MSG_NAMES, TypeRegistrationError, find_msg_dir, make_typestore, register_aloe_types


def test_installed_definitions_register_every_aloe_type():
    typestore = make_typestore()
    for name in ALOE_MSG_NAMES:
        assert f"aloe_msgs/msg/{name}" in typestore.types
    assert "sensor_msgs/msg/Image" in typestore.types  # standard types still there


def test_registered_definition_matches_the_msg_file_fields():
    typestore = make_typestore()
    fields = [f[0] for f in typestore.fielddefs["aloe_msgs/msg/ActionChunk"][1]]
    assert fields == ["header", "chunk_id", "policy_id", "observation_stamp", "control_period",
                      "horizon", "action_dim", "action_names", "actions"]
    assert (find_msg_dir() / "ActionChunk.msg").is_file()


def test_missing_definition_gives_a_clear_error(tmp_path):
    for name in ALOE_MSG_NAMES[1:]:
        (tmp_path / f"{name}.msg").write_text((find_msg_dir() / f"{name}.msg").read_text())
    with pytest.raises(TypeRegistrationError, match="missing message definition .*ActionChunk.msg"):
        register_aloe_types(get_typestore(Stores.ROS2_KILTED), tmp_path)


def test_malformed_definition_gives_a_clear_error(tmp_path):
    for name in ALOE_MSG_NAMES:
        (tmp_path / f"{name}.msg").write_text((find_msg_dir() / f"{name}.msg").read_text())
    (tmp_path / "Intervention.msg").write_text("bool active\nthis is not ( a field\n")
    with pytest.raises(TypeRegistrationError, match="cannot parse .*Intervention.msg"):
        register_aloe_types(get_typestore(Stores.ROS2_KILTED), tmp_path)


def test_unregistered_type_cannot_be_deserialized():
    typestore = get_typestore(Stores.ROS2_KILTED)
    with pytest.raises(KeyError):
        typestore.deserialize_cdr(b"\x00\x01\x00\x00", "aloe_msgs/msg/ActionChunk")
