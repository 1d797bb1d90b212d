"""PickCubeSim: observations, seeding, exact snapshots (the OPE ground truth), rollouts."""

import numpy as np
import pytest

from aloe_sim.env import (ACTION_DIM, PickCubeSim, RolloutResult, SimConfig, TaskState, TASK_STATE_LABELS,
                          rollout)
from aloe_sim.scripted import ScriptedPickController


@pytest.fixture(scope="module")
def sim():
    s = PickCubeSim(SimConfig(image_size=32, cameras=("front",), max_steps=30))
    yield s
    s.close()


@pytest.fixture(scope="module")
def state_sim():
    s = PickCubeSim(cameras=(), max_steps=100)
    yield s
    s.close()


def test_observation_has_named_fields_and_images_of_configured_size(sim):
    obs = sim.reset(seed=3)
    assert obs.images["front"].shape == (32, 32, 3) and obs.images["front"].dtype == np.uint8
    assert obs.images["front"].std() > 0, "rendered image is blank"
    assert obs.joint_pos.shape == (7,) and obs.joint_vel.shape == (7,)
    assert obs.gripper == 0.0 and obs.step == 0 and not obs.success
    assert obs.proprio().shape == (18,) and obs.proprio().dtype == np.float32
    assert obs.cube[2] == pytest.approx(0.02, abs=2e-3)  # cube resting on the table
    obs, reward, terminated, truncated, info = sim.step([0, 0, 0, 0, 0, 0, 1.0])
    assert obs.gripper == 1.0, "grip +1 closes the gripper command in one tick"
    assert obs.step == 1 and obs.t == pytest.approx(0.1)


def test_reset_seed_fixes_cube_position_and_leaves_global_numpy_stream_alone(state_sim):
    np.random.seed(123)
    expected_next = np.random.rand()
    np.random.seed(123)
    a = state_sim.reset(seed=7).cube.copy()
    assert np.random.rand() == expected_next, "reset must not consume the global np.random stream"
    b = state_sim.reset(seed=8).cube.copy()
    c = state_sim.reset(seed=7).cube.copy()
    assert np.array_equal(a, c) and not np.allclose(a[:2], b[:2])


def test_unseeded_resets_follow_the_config_seed_sequence():
    cubes = []
    for _ in range(2):
        s = PickCubeSim(cameras=(), seed=11)
        cubes.append([s.reset().cube.copy() for _ in range(2)])
        s.close()
    assert np.array_equal(cubes[0], cubes[1])
    assert not np.array_equal(cubes[0][0], cubes[0][1])


def test_restored_state_reproduces_the_trajectory_bit_for_bit(sim):
    sim.reset(seed=5)
    rng = np.random.default_rng(0)
    for _ in range(4):
        sim.step(np.r_[rng.normal(0, 0.02, 3), 0, 0, 0, 0.3])
    saved = sim.get_state()
    actions = np.c_[rng.normal(0, 0.03, (8, 3)), np.zeros((8, 3)), rng.uniform(-1, 1, (8, 1))]

    def play():
        out = []
        for a in actions:
            obs, reward, term, trunc, _ = sim.step(a)
            out.append((obs.joint_pos, obs.joint_vel, obs.tcp, obs.cube, obs.gripper, obs.images["front"], reward))
        return out

    first = play()
    restored = sim.set_state(saved)
    assert restored.step == 4
    second = play()
    sim.set_state(saved)
    third = play()
    for x, y, z in zip(first, second, third):
        for u, v, w in zip(x, y, z):
            assert np.array_equal(u, v) and np.array_equal(u, w), "restored rollout diverged"


def test_set_state_restores_episode_counters_so_time_limit_matches(sim):
    sim.reset(seed=1)
    for _ in range(29):
        sim.step(np.zeros(ACTION_DIM))
    saved = sim.get_state()
    _, _, _, truncated, _ = sim.step(np.zeros(ACTION_DIM))
    assert truncated and sim.done
    with pytest.raises(RuntimeError):
        sim.step(np.zeros(ACTION_DIM))
    sim.set_state(saved)
    assert not sim.done
    _, _, _, truncated, _ = sim.step(np.zeros(ACTION_DIM))
    assert truncated


def test_step_rejects_malformed_actions(state_sim):
    state_sim.reset(seed=0)
    with pytest.raises(ValueError, match="7 values"):
        state_sim.step(np.zeros(6))
    with pytest.raises(ValueError, match="NaN"):
        state_sim.step([np.nan] * 7)


def test_rollout_from_saved_state_measures_policy_success(state_sim):
    state_sim.reset(seed=2)
    saved = state_sim.get_state()
    controller = ScriptedPickController()
    result = rollout(state_sim, lambda o: controller.act(o.task_state()))
    assert isinstance(result, RolloutResult) and result.success and result.reason == "success"
    assert result.rewards[-1] == 1.0 and result.discounted_return(0.9) == pytest.approx(0.9 ** (result.steps - 1))
    state_sim.set_state(saved)
    controller.reset()
    again = rollout(state_sim, lambda o: controller.act(o.task_state()))
    assert np.array_equal(result.actions, again.actions)


def test_task_state_array_round_trip():
    s = TaskState(cube=np.array([0.4, 0.1, 0.02]), tcp=np.array([0.5, 0.0, 0.08]), gripper=0.5, t=1.2)
    arr = s.to_array()
    assert arr.shape == (len(TASK_STATE_LABELS),)
    back = TaskState.from_array(arr)
    assert np.array_equal(back.cube, s.cube) and back.t == 1.2 and back.tick() == 12
    with pytest.raises(ValueError):
        TaskState.from_array(arr[:5])


def test_proprio_matches_what_the_policy_builds_from_joint_states(sim):
    """sim_node publishes joint_states + ee_pose; aloe_data.observation turns them into the
    same vector the ROS-free Observation gives (the model sees identical numbers live and offline)."""
    from aloe_data.observation import ProprioSpec, proprio_vector

    from aloe_sim.env import GRIPPER_JOINT_NAME, JOINT_NAMES

    obs, *_ = sim.step(np.r_[0.01, 0, 0, 0, 0, 0, 0.5]) if not sim.done else (sim.reset(0),)
    names = [*JOINT_NAMES, GRIPPER_JOINT_NAME]
    vec = proprio_vector(ProprioSpec(), names, [*obs.joint_pos, obs.gripper], [*obs.joint_vel, 0.0], obs.tcp)
    assert ProprioSpec().dim == 18
    np.testing.assert_array_equal(vec, obs.proprio())


def test_workspace_camera_shows_the_cube_larger_than_the_front_camera():
    """The added scene camera: over several cube positions the cube (pink) covers more pixels
    than in gym-hil's "front" view (the hand may hide it at some start positions), and the
    image changes with the cube position."""
    with PickCubeSim(SimConfig(image_size=64, cameras=("workspace", "front"), max_steps=5)) as s:
        def cube_pixels(img):
            r, g, b = (img[..., i].astype(int) for i in range(3))
            return (r > 200) & (b > 200) & (g < 200)

        views = [s.reset(seed=seed).images for seed in range(8)]
        workspace = [int(cube_pixels(v["workspace"]).sum()) for v in views]
        front = [int(cube_pixels(v["front"]).sum()) for v in views]
        assert np.median(workspace) >= 2 * np.median(front) and np.median(front) >= 1, (workspace, front)
        assert (views[0]["workspace"] != views[2]["workspace"]).any()
