"""The schema agrees with the interface definitions it mirrors (aloe_msgs constants)."""

import pytest

from aloe_data import schema


def test_event_and_source_codes_match_the_message_constants():
    msgs = pytest.importorskip("aloe_msgs.msg", reason="aloe_msgs is built by scripts/setup.sh")
    e, x = msgs.EpisodeEvent, msgs.ExecutedAction
    assert (e.START, e.SUCCESS, e.FAILURE, e.ABORT) == (schema.EVENT_START, schema.EVENT_SUCCESS,
                                                        schema.EVENT_FAILURE, schema.EVENT_ABORT)
    assert (x.SOURCE_POLICY, x.SOURCE_HUMAN, x.SOURCE_HOLD) == (schema.SOURCE_POLICY, schema.SOURCE_HUMAN,
                                                               schema.SOURCE_HOLD)
    assert [schema.SOURCE_NAMES[c] for c in (x.SOURCE_POLICY, x.SOURCE_HUMAN, x.SOURCE_HOLD)] == ["POLICY", "HUMAN",
                                                                                              "HOLD"]
    assert schema.EVENT_CODES == {"START": 0, "SUCCESS": 1, "FAILURE": 2, "ABORT": 3}


def test_topic_defaults_are_absolute_ros_names():
    names = [v for k, v in vars(schema).items() if k.startswith(("TOPIC_", "SERVICE_"))]
    assert names and all(n.startswith("/") and " " not in n for n in names)
    assert schema.TOPIC_CAMERA_FMT.format(name="front") == "/camera/front/image_raw"
