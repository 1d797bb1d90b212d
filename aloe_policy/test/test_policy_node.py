"""policy_node in its own process with tiny checkpoints saved by aloe_policy.model.

This test process plays the robot (camera, joint_states, EE pose, task) and listens to the
chunks; the checkpoints' text cache holds the task, so MiniLM is never loaded.
"""

import os
import signal
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("torch")
from aloe_msgs.msg import ActionChunk  # noqa: E402
from aloe_msgs.srv import LoadPolicy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseStamped  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image, JointState  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from aloe_policy import testing  # noqa: E402
from aloe_data.observation import rgb_to_compressed, rgb_to_image_fields  # noqa: E402

pytestmark = pytest.mark.system

TASK = "pick up the cube"
TINY = dict(image_size=16, chunk_horizon=4, cnn_channels=(8, 16), cnn_pool_size=2, hidden_dim=32,
            head_hidden_dim=64, head_layers=1, time_embed_dim=16, text_embed_dim=32, dropout=0.0, flow_steps=4)
JOINTS = [f"panda_joint{i}" for i in range(1, 8)] + ["panda_gripper"]
NODE_PARAMS = {"torch_threads": 1, "execution_horizon": 2, "observation_timeout_s": 2.0}


def thread_niceness(pid: int) -> dict[int, int]:
    """thread id -> nice value of every thread of a process (Linux /proc; field 19 of stat)."""
    from pathlib import Path

    out = {}
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        fields = stat.read_text().rsplit(")", 1)[1].split()
        out[int(stat.parent.name)] = int(fields[16])  # fields after "(comm)" start at field 3
    return out


def save_tiny_checkpoint(directory, seed, **overrides) -> str:
    return testing.save_tiny_checkpoint(directory, seed, {**TINY, **overrides}, TASK, action_spread=0.1)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    ids = {name: save_tiny_checkpoint(root / name, seed) for name, seed in (("a", 1), ("b", 2))}
    corrupt = root / "corrupt"
    save_tiny_checkpoint(corrupt, 3)
    weights = corrupt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:3000])  # truncated safetensors
    wrist = save_tiny_checkpoint(root / "wrist", 4, camera_names=("wrist",))  # valid, but needs another camera
    # valid, but for another robot: 6 actions, or the same actions at 20 Hz
    six = save_tiny_checkpoint(root / "six", 5, action_dim=6, action_names=tuple(f"j{i}" for i in range(6)),
                               action_low=(-1.0,) * 6, action_high=(1.0,) * 6)
    fast = save_tiny_checkpoint(root / "fast", 6, control_period_s=0.05)
    from aloe_data.observation import ProprioSpec
    names = ProprioSpec().names
    swapped = [names[1], names[0]] + names[2:]  # a robot whose first two joints are listed the other way round
    named = save_tiny_checkpoint(root / "named", 7, proprio_names=tuple(names))
    permuted = save_tiny_checkpoint(root / "permuted", 8, proprio_names=tuple(swapped))
    # trained on cameras recorded as: grey; colour at another aspect; colour at 2x the test robot's 32x24
    formats = {"grey": "mono8 32x24", "wide": "rgb8 64x24", "colour": "bgr8 64x48"}
    formats = {name: save_tiny_checkpoint(root / name, 9 + i, camera_formats=(fmt,))
               for i, (name, fmt) in enumerate(formats.items())}
    formats["tool_frame"] = save_tiny_checkpoint(root / "tool_frame", 13, action_frame="tool0",
                                                 action_units=("m", "m", "m", "rad", "rad", "rad", "1"))
    formats["depth"] = save_tiny_checkpoint(root / "depth", 12, camera_formats=("16UC1 32x24",), depth_range_m=2.0)
    return {"a": (str(root / "a"), ids["a"]), "b": (str(root / "b"), ids["b"]), "corrupt": (str(corrupt), ""),
            "wrist": (str(root / "wrist"), wrist), "six": (str(root / "six"), six), "fast": (str(root / "fast"), fast),
            "named": (str(root / "named"), named), "permuted": (str(root / "permuted"), permuted),
            **{name: (str(root / name), policy_id) for name, policy_id in formats.items()}}


@pytest.fixture(scope="module")
def rclpy_context():
    rclpy.init()
    yield
    rclpy.shutdown()


class Robot:
    """Publishes the robot's inputs at ~20 Hz while spinning; records chunks."""

    def __init__(self, proc, encoding="rgb8"):
        self.proc = proc
        self.encoding = encoding
        self.node = rclpy.create_node("policy_test_robot")
        self.cam_pub = self.node.create_publisher(Image, "/camera/front/image_raw", 10)
        self.jpeg_pub = self.node.create_publisher(CompressedImage, "/camera/front/image_raw/compressed", 10)
        self.js_pub = self.node.create_publisher(JointState, "/joint_states", 10)
        self.ee_pub = self.node.create_publisher(PoseStamped, "/aloe/ee_pose", 10)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.task_pub = self.node.create_publisher(String, "/aloe/task", latched)
        self.task_pub.publish(String(data=TASK))
        self.chunks: list[ActionChunk] = []
        self.diagnostics = {}
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.node.create_subscription(ActionChunk, "/aloe/action_chunk", self.chunks.append,
                                      QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
        self.stamps: list[int] = []
        self.send_camera = True
        self.publishing = True  # False: every input goes silent
        self._last = 0.0
        self.rgb = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)

    def _on_diagnostics(self, msg):
        for status in msg.status:
            if "policy inference" in status.name:
                self.diagnostics = {kv.key: kv.value for kv in status.values}

    def publish_inputs(self):
        stamp = self.node.get_clock().now().to_msg()
        self.stamps.append(stamp.sec * 1_000_000_000 + stamp.nanosec)
        if self.send_camera and self.encoding == "jpeg":
            img = CompressedImage(format="jpeg", data=rgb_to_compressed(self.rgb))
            img.header.stamp = stamp
            self.jpeg_pub.publish(img)
        elif self.send_camera and self.encoding == "16UC1":  # depth: millimetres, 0 = no return
            mm = (self.rgb[..., 0].astype(np.uint16) * 8).astype("<u2")
            img = Image(encoding="16UC1", height=mm.shape[0], width=mm.shape[1], step=2 * mm.shape[1],
                        is_bigendian=0, data=mm.tobytes())
            img.header.stamp = stamp
            self.cam_pub.publish(img)
        elif self.send_camera:
            img = Image(**rgb_to_image_fields(self.rgb, self.encoding))
            img.header.stamp = stamp
            self.cam_pub.publish(img)
        js = JointState(name=JOINTS, position=[0.1] * 8, velocity=[0.0] * 8)
        js.header.stamp = stamp
        self.js_pub.publish(js)
        ee = PoseStamped()
        ee.header.stamp = stamp
        ee.pose.position.x, ee.pose.position.z = 0.4, 0.2
        self.ee_pub.publish(ee)

    def spin(self, seconds, until=None):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.publishing and time.monotonic() - self._last > 0.05:
                self._last = time.monotonic()
                self.publish_inputs()
            rclpy.spin_once(self.node, timeout_sec=0.01)
            if until is not None and until():
                return True
        return until is None

    def wait_chunks(self, n, timeout=30.0, policy_id=None):
        def enough():
            return len([c for c in self.chunks if policy_id is None or c.policy_id == policy_id]) >= n
        assert self.spin(timeout, enough), (f"fewer than {n} chunks (policy {policy_id}) in {timeout}s; "
                                            f"policy_node log:\n{self.proc.log()[-3000:]}")

    def load_policy(self, service, path, timeout=60.0) -> LoadPolicy.Response:
        client = self.node.create_client(LoadPolicy, service)
        assert self.spin(20.0, client.service_is_ready), f"service {service} not available"
        future = client.call_async(LoadPolicy.Request(checkpoint_path=path))
        assert self.spin(timeout, future.done), f"{service} did not answer in {timeout}s"
        return future.result()

    def close(self):
        self.node.destroy_node()


@pytest.fixture
def start_policy(ros_node_process, rclpy_context):
    robots = []

    def start(encoding="rgb8", **params):
        proc = ros_node_process("aloe_policy", "policy_node", {**NODE_PARAMS, **params})
        robot = Robot(proc, encoding)
        robots.append(robot)
        return robot

    yield start
    for r in robots:
        r.close()


def test_policy_node_publishes_chunks_of_the_checkpoint_shape_once_all_inputs_arrive(start_policy, checkpoints):
    path, policy_id = checkpoints["a"]
    robot = start_policy(checkpoint=path)
    robot.send_camera = False
    line = "no inference: nothing received yet on front (/camera/front/image_raw)\n"
    # publish the other inputs until the node names the camera alone (on a loaded machine the first
    # joint_states / ee_pose may arrive seconds late), then keep publishing: the line must not repeat
    assert robot.spin(30.0, lambda: line in robot.proc.log()), f"not logged; log:\n{robot.proc.log()}"
    robot.spin(3.0)
    assert robot.chunks == [], "no inference while the camera is missing"
    log = robot.proc.log()
    assert log.count(line) == 1, f"a missing input is logged once, not per attempt; log:\n{log}"
    robot.send_camera = True
    robot.wait_chunks(3)
    log = robot.proc.log()
    for chunk in robot.chunks:
        assert (chunk.horizon, chunk.action_dim, len(chunk.actions)) == (4, 7, 28)
        assert chunk.policy_id == policy_id
        assert list(chunk.action_names) == ["dx", "dy", "dz", "rx", "ry", "rz", "grip"]
        assert chunk.control_period.sec == 0 and chunk.control_period.nanosec == 100_000_000
        assert np.all(np.isfinite(chunk.actions)) and np.all(np.abs(chunk.actions) <= 1.0)
        stamp = chunk.observation_stamp.sec * 1_000_000_000 + chunk.observation_stamp.nanosec
        assert stamp in robot.stamps, f"stamped with the stamp of an observation it saw; log:\n{log}"
    ids = [c.chunk_id for c in robot.chunks]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    # inference_nice (default 10) lowers the inference thread only; the thread that runs the ROS
    # callbacks (the process's main thread) keeps normal priority.
    # Relative to the niceness the node started with (a test run under `nice` starts it above 0).
    base = os.nice(0)
    nice = thread_niceness(robot.proc.popen.pid)
    assert nice[robot.proc.popen.pid] == base and min(base + 10, 19) in nice.values(), (base, nice)
    # A diagnostics message sent between the first and second chunk has a rate of 0: wait for one
    # after at least two chunks (the message comes once a second).
    assert robot.spin(5.0, lambda: robot.diagnostics.get("policy_id") == policy_id
                      and float(robot.diagnostics["inference_latency_ms_p50"]) > 0
                      and float(robot.diagnostics["chunk_rate_hz"]) > 0), robot.diagnostics


def test_load_policy_refuses_corrupt_checkpoint_and_swaps_to_good_one(start_policy, checkpoints):
    path_a, id_a = checkpoints["a"]
    path_b, id_b = checkpoints["b"]
    robot = start_policy(checkpoint=path_a)
    robot.wait_chunks(2, policy_id=id_a)

    refused = robot.load_policy("/policy_node/load_policy", checkpoints["corrupt"][0])
    assert not refused.success
    assert "truncated or corrupt" in refused.message and refused.policy_id == id_a
    n = len(robot.chunks)
    robot.wait_chunks(n + 3)
    assert {c.policy_id for c in robot.chunks[n:]} == {id_a}, "chunks keep coming from the running policy"

    incompatible = robot.load_policy("/policy_node/load_policy", checkpoints["wrist"][0])
    assert not incompatible.success and incompatible.policy_id == id_a
    assert "needs cameras ['wrist']" in incompatible.message

    swapped = robot.load_policy("/aloe/load_policy", path_b)  # the remappable alias
    assert swapped.success, swapped.message
    assert swapped.policy_id == id_b and id_b in swapped.message
    n = len(robot.chunks)
    robot.wait_chunks(n + 3)
    assert {c.policy_id for c in robot.chunks[n:]} == {id_b}, "no chunk of the old policy after the swap"


def test_load_policy_refuses_a_checkpoint_for_another_action_space_and_keeps_driving(start_policy, checkpoints):
    path_a, id_a = checkpoints["a"]
    robot = start_policy(checkpoint=path_a)  # no action_names parameter: the running policy sets them
    robot.wait_chunks(2, policy_id=id_a)
    for name, expected in (("six", "commands actions ['j0', 'j1', 'j2', 'j3', 'j4', 'j5'] (dim 6)"),
                           ("fast", "has control period 0.05 s but the robot runs at 0.1 s"),
                           ("permuted", "reads proprio ['panda_joint2.position', 'panda_joint1.position', "
                                        "'panda_joint3.position']... at entry 0")):
        refused = robot.load_policy("/policy_node/load_policy", checkpoints[name][0])
        assert not refused.success and refused.policy_id == id_a, refused.message
        assert expected in refused.message
    n = len(robot.chunks)
    robot.wait_chunks(n + 3)
    assert {c.policy_id for c in robot.chunks[n:]} == {id_a}, "the running policy keeps driving"
    named = robot.load_policy("/policy_node/load_policy", checkpoints["named"][0])  # same joints, by name
    assert named.success, named.message


def test_load_policy_refuses_a_checkpoint_trained_on_another_kind_or_aspect_of_image_by_camera_name(start_policy,
                                                                                                  checkpoints):
    path_a, id_a = checkpoints["a"]
    robot = start_policy(checkpoint=path_a)  # the robot's camera sends rgb8 32x24
    robot.wait_chunks(2, policy_id=id_a)
    for name, expected in (("grey", "camera 'front' (/camera/front/image_raw) sends colour images (rgb8 32x24) but "
                                    "the policy was trained on mono (mono8 32x24)"),
                           ("wide", "sends 32x24 images (aspect 1.333) but the policy was trained on 64x24")):
        refused = robot.load_policy("/policy_node/load_policy", checkpoints[name][0])
        assert not refused.success and refused.policy_id == id_a, refused.message
        assert expected in refused.message, refused.message
    colour, colour_id = checkpoints["colour"]  # bgr8 64x48: same kind and field of view, the model sees 16x16 RGB
    loaded = robot.load_policy("/policy_node/load_policy", colour)
    assert loaded.success, loaded.message
    robot.wait_chunks(2, policy_id=colour_id)


def test_policy_node_holds_and_says_why_when_a_camera_first_sends_images_unlike_its_training(start_policy,
                                                                                            checkpoints):
    robot = start_policy(checkpoint=checkpoints["grey"][0])  # loaded before any frame: checked at the first one
    why = "camera 'front' (/camera/front/image_raw) sends colour images (rgb8 32x24)"
    assert robot.spin(30.0, lambda: why in robot.proc.log()), robot.proc.log()[-2000:]
    robot.spin(2.0)
    assert robot.chunks == []
    assert robot.proc.log().count("sends colour images") == 1, "one line for the cause, not one per loop"
    ok = robot.load_policy("/policy_node/load_policy", checkpoints["a"][0])  # records no formats: no check
    assert ok.success, ok.message
    robot.wait_chunks(2, policy_id=checkpoints["a"][1])


def test_load_policy_refuses_actions_in_another_frame_or_unit_where_both_sides_say_them(start_policy, checkpoints):
    path_a, id_a = checkpoints["a"]  # records no frame or units: not checked
    robot = start_policy(checkpoint=path_a, action_frame="panda_link0",
                         action_units=["m", "m", "m", "rad", "rad", "rad", "1"])
    robot.wait_chunks(2, policy_id=id_a)
    refused = robot.load_policy("/policy_node/load_policy", checkpoints["tool_frame"][0])
    assert not refused.success and refused.policy_id == id_a
    assert "commands actions in frame 'tool0' but the robot takes them in 'panda_link0'" in refused.message


def test_policy_node_drives_from_a_depth_camera_with_a_checkpoint_trained_on_one(start_policy, checkpoints):
    path, policy_id = checkpoints["depth"]
    robot = start_policy("16UC1", checkpoint=path)
    robot.wait_chunks(2, policy_id=policy_id)
    refused = robot.load_policy("/policy_node/load_policy", checkpoints["colour"][0])  # a colour policy
    assert not refused.success and "sends depth images (16UC1 32x24)" in refused.message, refused.message


def test_policy_node_refuses_at_start_a_checkpoint_not_matching_the_configured_action_names(start_policy,
                                                                                          checkpoints):
    robot = start_policy(checkpoint=checkpoints["six"][0],
                         action_names=["dx", "dy", "dz", "rx", "ry", "rz", "grip"])
    robot.proc.wait_for_log("but the robot takes ['dx', 'dy', 'dz', 'rx', 'ry', 'rz', 'grip'] (dim 7, parameter "
                            "action_names)")
    robot.spin(1.0)
    assert robot.chunks == []
    ok = robot.load_policy("/policy_node/load_policy", checkpoints["a"][0])
    assert ok.success, ok.message


def test_policy_node_logs_a_lasting_input_outage_once_not_every_loop(start_policy, checkpoints):
    path_a, id_a = checkpoints["a"]
    robot = start_policy(checkpoint=path_a, observation_timeout_s=0.3)
    robot.wait_chunks(2, policy_id=id_a)
    robot.publishing = False  # every input goes silent
    robot.spin(3.0)
    log = robot.proc.log()
    assert log.count("no inference: stale inputs") == 1, log[-2000:]


def test_policy_node_without_checkpoint_waits_and_says_so_until_loaded(start_policy, checkpoints):
    robot = start_policy()
    robot.proc.wait_for_log("no checkpoint parameter: waiting for a policy on ~/load_policy")
    robot.spin(2.0)
    assert robot.chunks == []
    path, policy_id = checkpoints["b"]
    response = robot.load_policy("/policy_node/load_policy", path)
    assert response.success and response.policy_id == policy_id
    robot.wait_chunks(2, policy_id=policy_id)


@pytest.mark.parametrize("encoding, transport", [("mono8", "raw"), ("bgr8", "raw"), ("jpeg", "compressed")])
def test_policy_node_infers_from_other_image_encodings_and_compressed_images(start_policy, checkpoints,
                                                                             encoding, transport):
    path, policy_id = checkpoints["a"]
    robot = start_policy(encoding, checkpoint=path, image_transport=transport)
    robot.wait_chunks(2, policy_id=policy_id)
    assert "inference failed" not in robot.proc.log()


def test_executor_runs_the_policy_node_chunks_end_to_end(start_policy, ros_node_process, checkpoints):
    from aloe_msgs.msg import ExecutedAction

    path, policy_id = checkpoints["a"]
    robot = start_policy(checkpoint=path)
    executor = ros_node_process("aloe_policy", "executor_node", {"control_rate_hz": 10.0, "chunk_horizon": 4})
    executed = []
    robot.node.create_subscription(ExecutedAction, "/aloe/executed_action", executed.append,
                                   QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    running = [m for m in executed if m.source == ExecutedAction.SOURCE_POLICY]

    def ten_policy_ticks():
        running[:] = [m for m in executed if m.source == ExecutedAction.SOURCE_POLICY]
        return len(running) >= 10

    assert robot.spin(40.0, ten_policy_ticks), f"executor log:\n{executor.log()[-2000:]}"
    assert {m.policy_id for m in running} == {policy_id}
    assert all(0 <= m.index_in_chunk < 4 for m in running)
    # Idle time with vs without asynchronous inference needs a realistic inference latency:
    # measured by bench/bench_executor.py, not here.


def test_policy_node_as_a_managed_node_loads_on_configure_and_infers_only_while_active(start_policy, checkpoints):
    from test_executor_node import change_state

    path_a, id_a = checkpoints["a"]
    robot = start_policy(checkpoint=path_a, autostart=False)
    robot.spin(2.0)
    assert robot.chunks == [], "unconfigured: no chunk"
    assert change_state(robot.node, "/policy_node", "configure")
    robot.proc.wait_for_log(f"loaded policy {id_a}")
    robot.spin(1.0)
    assert robot.chunks == [], "configured but inactive: no chunk"
    assert change_state(robot.node, "/policy_node", "activate")
    robot.wait_chunks(2, policy_id=id_a)
    assert change_state(robot.node, "/policy_node", "deactivate")
    robot.spin(0.5)
    n = len(robot.chunks)
    robot.spin(1.5)
    assert len(robot.chunks) == n, "deactivated: inference stops (the executor holds)"


def test_policy_node_configure_fails_on_a_bad_checkpoint_when_managed(start_policy, checkpoints):
    from test_executor_node import change_state

    robot = start_policy(checkpoint=checkpoints["corrupt"][0], autostart=False)
    assert not change_state(robot.node, "/policy_node", "configure")
    robot.proc.wait_for_log("configure failed")


def test_policy_node_drives_from_a_remote_policy_server_and_holds_through_its_restart(start_policy, checkpoints):
    from aloe_policy.testing import start_server

    path, policy_id = checkpoints["a"]
    server, port = start_server(path)
    try:
        robot = start_policy(backend="openpi_remote", checkpoint=f"ws://127.0.0.1:{port}", remote_timeout_s=1.0)
        robot.wait_chunks(3, policy_id=policy_id)
        server.send_signal(signal.SIGINT)
        server.wait(20)
        assert robot.spin(20.0, lambda: "inference failed" in robot.proc.log()), robot.proc.log()[-2000:]
        robot.spin(1.0)
        n = len(robot.chunks)
        robot.spin(1.5)
        assert len(robot.chunks) == n, "no chunks while the server is down: the executor's chunks go stale, it holds"
        server, _ = start_server(path, port)
        robot.wait_chunks(n + 3, policy_id=policy_id, timeout=30.0)
    finally:
        server.kill()


def test_value_guided_selection_needs_the_critic_in_the_checkpoint_and_then_drives(start_policy, checkpoints,
                                                                                   tmp_path):
    import shutil

    import torch

    from aloe_critic.critic import CriticConfig, critic_for_policy, export_chunk_scorer
    from aloe_policy.model import FlowMatchingPolicy

    path_a, id_a = checkpoints["a"]
    scored = tmp_path / "scored"
    shutil.copytree(path_a, scored)
    policy = FlowMatchingPolicy.from_pretrained(scored)
    critic = critic_for_policy(policy, CriticConfig(ensemble_size=2, critic_hidden_dim=8, freeze_encoder=True))
    obs = {"images": {"front": torch.zeros(2, 16, 16, 3, dtype=torch.uint8)}, "proprio": torch.zeros(2, 18),
           "task": [TASK, TASK]}
    export_chunk_scorer(critic, policy, scored / "chunk_scorer.pt", obs)
    robot = start_policy(checkpoint=path_a, value_guided_samples=4)  # no chunk_scorer.pt in a: refused
    assert robot.spin(20.0, lambda: "has no chunk_scorer.pt" in robot.proc.log()), robot.proc.log()[-2000:]
    assert robot.load_policy("/policy_node/load_policy", str(scored)).success
    robot.wait_chunks(3, policy_id=id_a)
