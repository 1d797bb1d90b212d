"""teleop_node + recorder_node together: an operator-labelled episode becomes one bag."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("rclpy")

from aloe_msgs.msg import EpisodeEvent  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from test_teleop_node import Operator  # noqa: E402

from aloe_data.episode_bag import load_episode_metadata  # noqa: E402


def test_operator_episode_with_two_takeovers_is_one_labelled_bag(ros_node_process, tmp_path):
    operator = Operator()
    try:
        out = tmp_path / "bags"
        recorder = ros_node_process("aloe_teleop", "recorder_node", {
            "output_dir": str(out), "topics": ["/aloe/intervention", "/aloe/episode_event", "/aloe/task"],
            "flush_interval_s": 0.2, "min_free_mb": 1.0, "discovery_period_s": 0.1})
        teleop = ros_node_process("aloe_teleop", "teleop_node", {"devices": ["joy"], "device_timeout_s": 2.0})
        operator.task.publish(String(data="open the drawer"))
        recorder.wait_for_log("waiting for")
        teleop.wait_for_log("teleop ready")
        operator.wait_for(lambda: operator.joy.get_subscription_count() > 0, what="teleop subscribed to /joy")
        recorder.wait_for_log("subscribed /aloe/intervention", timeout=20)
        assert operator.call("/teleop_node/start").success
        recorder.wait_for_log("recording to", timeout=10)
        for _ in range(2):  # two takeovers of 5 device readings each
            for _ in range(5):
                operator.press(buttons=[4], axes={0: 1.0})
                time.sleep(0.03)
            operator.press(buttons=[])
            time.sleep(0.1)
        time.sleep(0.3)
        assert operator.call("/teleop_node/success").success
        recorder.wait_for_log("recorder: closed", timeout=10)
        start = next(e for e in operator.events if e.event == EpisodeEvent.START)
        bag = out / start.episode_id
        meta = load_episode_metadata(bag)
        assert meta["episode_id"] == start.episode_id and meta["outcome"] == "SUCCESS"
        assert meta["task"] == "open the drawer" and meta["takeovers"] == 2
        assert meta["message_counts"]["/aloe/intervention"] >= 12  # 10 active + 2 releases (+ repeats)
    finally:
        operator.close()
