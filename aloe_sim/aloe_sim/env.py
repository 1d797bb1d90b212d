"""ROS-free simulated robot: gym-hil's MuJoCo Panda pick-cube task with fast offscreen cameras.

``PickCubeSim`` wraps ``gym_hil/PandaPickCubeBase-v0`` (10 Hz control, cube at a random
position) and adds what the rest of the suite needs from a simulator:

* camera images rendered once per tick at a small size with a cheap render quality
  (the scene's default quality costs ~0.6 s per frame on a CPU; see SETUP-NOTES.md);
* an ``Observation`` with named fields (joint positions/velocities, gripper command in
  [0, 1], TCP and cube position) instead of gym-hil's packed vector;
* ``get_state()`` / ``set_state()``: an exact snapshot of everything that determines the
  future, so rolling the same actions out from a restored state reproduces the trajectory
  bit for bit. That is the ground truth for off-policy evaluation: the value of a policy at
  a saved state is measured by repeated rollouts from it (``rollout``).

Heavy imports (mujoco, gymnasium, gym_hil) happen when a ``PickCubeSim`` is made, so the
scripted operator can use ``TaskState`` without loading the simulator.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

ENV_ID = "gym_hil/PandaPickCubeBase-v0"
CONTROL_PERIOD_S = 0.1  # gym-hil control_dt: one step = 0.1 s of sim time
ACTION_DIM = 7
from aloe_data.schema import SIM_ACTION_NAMES as ACTION_NAMES  # noqa: E402
JOINT_NAMES = tuple(f"panda_joint{i}" for i in range(1, 8))
GRIPPER_JOINT_NAME = "panda_gripper"  # joint_states entry carrying the gripper command in [0, 1]
CAMERAS = ("front", "handcam_rgb", "workspace")
# "workspace" is a scene camera this wrapper adds (a MuJoCo free camera): fixed, in front of the
# robot, looking 55 degrees down at the centre of the cube's workspace from 0.7 m. gym-hil's
# "front" camera sees the whole robot from 1.3 m, where the 4 cm cube is ~2 pixels of a 64x64
# image; here it is ~4, enough for a small CNN to localise it.
WORKSPACE_CAMERA = {"lookat": (0.42, 0.0, 0.03), "azimuth": 180.0, "elevation": -55.0, "distance": 0.7}
CUBE_HALF_SIZE = 0.02  # metres (gym-hil block geom size)
MAX_GRIPPER_COMMAND = 255.0  # gym-hil actuator range of the gripper command
_WORKSPACE_XY = np.asarray([[0.3, -0.15], [0.5, 0.15]])  # gym-hil cube sampling bounds
_WORKSPACE_MARGIN = 0.05  # gym-hil terminates when the cube leaves the bounds by this much

# Layout of the privileged /aloe/sim/state vector (std_msgs/Float64MultiArray).
TASK_STATE_LABELS = ("cube_x", "cube_y", "cube_z", "tcp_x", "tcp_y", "tcp_z", "gripper", "t")


@dataclass
class TaskState:
    """Privileged task state the scripted operator acts on.

    cube, tcp: (3,) metres in the world frame (= panda_link0); gripper: command in [0, 1]
    (1 = closed); t: seconds since the episode started (0.0 at reset).
    """

    cube: np.ndarray
    tcp: np.ndarray
    gripper: float
    t: float

    def to_array(self) -> np.ndarray:
        """(8,) float64 in the order of ``TASK_STATE_LABELS``."""
        return np.concatenate([self.cube, self.tcp, [self.gripper, self.t]]).astype(np.float64)

    @classmethod
    def from_array(cls, values) -> "TaskState":
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (len(TASK_STATE_LABELS),):
            raise ValueError(f"task state needs {len(TASK_STATE_LABELS)} values "
                             f"{TASK_STATE_LABELS}, got shape {values.shape}")
        return cls(cube=values[0:3].copy(), tcp=values[3:6].copy(), gripper=float(values[6]), t=float(values[7]))

    def tick(self, control_period: float = CONTROL_PERIOD_S) -> int:
        """Control tick index since the episode start."""
        return int(round(self.t / control_period))


@dataclass
class Observation:
    """What the simulated robot shows at one control tick.

    images: camera name -> (h, w, 3) uint8 RGB; joint_pos / joint_vel: (7,) rad, rad/s;
    gripper: command in [0, 1] (1 = closed); tcp: (3,) metres, pinch point of the gripper;
    cube: (3,) metres, cube centre (privileged: a real robot does not know it);
    success: the cube is lifted 0.1 m; step: control ticks since reset;
    tcp_quat: (4,) gripper orientation quaternion (w, x, y, z) in the world frame.
    """

    images: dict[str, np.ndarray]
    joint_pos: np.ndarray
    joint_vel: np.ndarray
    gripper: float
    tcp: np.ndarray
    cube: np.ndarray
    success: bool
    step: int
    control_period: float = CONTROL_PERIOD_S
    tcp_quat: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0, 0.0, 0.0]))

    @property
    def t(self) -> float:
        """Seconds since the episode start."""
        return self.step * self.control_period

    def proprio(self) -> np.ndarray:
        """(18,) float32 in ``aloe_data.observation.ProprioSpec`` default order:
        7 joint positions, 7 joint velocities, gripper, TCP xyz."""
        return np.concatenate([self.joint_pos, self.joint_vel, [self.gripper], self.tcp]).astype(np.float32)

    def task_state(self) -> TaskState:
        return TaskState(cube=self.cube.copy(), tcp=self.tcp.copy(), gripper=self.gripper, t=self.t)


@dataclass
class SimState:
    """Snapshot of everything that determines the simulator's future (see ``PickCubeSim.get_state``).

    ``data`` is a full copy of MuJoCo's MjData: besides qpos/qvel/act/ctrl/mocap/time it holds
    the solver warm start and the kinematics of the last physics step, which gym-hil's
    operational-space controller reads before the next step; restoring only qpos/qvel would
    make the next steps differ in the last bits.
    """

    data: object  # mujoco.MjData
    z_init: float
    z_success: float
    step: int
    done: bool
    episode_seed: int | None
    episode_index: int


@dataclass
class SimConfig:
    """image_size: rendered square image side in pixels; cameras: subset of ``CAMERAS``
    (empty = no rendering, the fast state-only mode); max_steps: ticks before truncation;
    seed: base seed of the episode seed sequence."""

    image_size: int = 64
    cameras: tuple[str, ...] = ("workspace",)
    max_steps: int = 100
    seed: int = 0


class PickCubeSim:
    """gym-hil Panda pick-cube with fast rendering, named observations and exact snapshots."""

    def __init__(self, config: SimConfig | None = None, **overrides):
        self.config = config = dataclasses.replace(config or SimConfig(), **overrides)
        config.cameras = tuple(config.cameras)
        unknown = [c for c in config.cameras if c not in CAMERAS]
        if unknown:
            raise ValueError(f"unknown cameras {unknown}; the scene has {list(CAMERAS)}")
        if config.image_size < 8:
            raise ValueError(f"image_size {config.image_size} too small; use >= 8 pixels")
        if config.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {config.max_steps}")

        import gymnasium as gym
        import gym_hil  # noqa: F401  (registers the gym_hil/* environments)
        import mujoco
        from gym_hil.mujoco_gym_env import GymRenderingSpec

        self._mujoco = mujoco
        size = int(config.image_size)
        # The env builds its own renderer at construction; give it our size so the offscreen
        # buffer fits our frames, then close it: we render with our own cheap-quality renderer.
        self._env = gym.make(ENV_ID, random_block_position=True, image_obs=False,
                             render_spec=GymRenderingSpec(height=size, width=size)).unwrapped
        self._env.close()
        model = self._env.model
        model.vis.quality.shadowsize = 0
        model.vis.quality.offsamples = 0
        self._renderer = None
        self._camera_ids = {}
        if config.cameras:
            self._renderer = mujoco.Renderer(model, height=size, width=size)
            flags = self._renderer.scene.flags
            for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
                         mujoco.mjtRndFlag.mjRND_SKYBOX):
                flags[flag] = 0
            self._camera_ids = {name: (_free_camera(mujoco) if name == "workspace"
                                       else mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, name))
                                for name in config.cameras}
        self._seeds = np.random.default_rng(config.seed)
        self._step = 0
        self._done = True
        self._episode_seed: int | None = None
        self._episode_index = -1
        self._last_obs: Observation | None = None

    # -- episode ---------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> Observation:
        """Start an episode. ``seed`` fixes the cube position; None draws the next seed of the
        sequence made from ``config.seed`` (so a run of episodes is reproducible)."""
        if seed is None:
            seed = int(self._seeds.integers(2**31 - 1))
        # gym-hil draws the cube position from the global np.random, not from the env seed.
        # Seed it for this draw only and put the global stream back, so other users of
        # np.random in this process are not disturbed.
        saved = np.random.get_state()
        np.random.seed(seed)
        try:
            self._env.reset(seed=seed)
        finally:
            np.random.set_state(saved)
        self._step = 0
        self._done = False
        self._episode_seed = seed
        self._episode_index += 1
        self._last_obs = self._observe(success=False)
        return self._last_obs

    def step(self, action) -> tuple[Observation, float, bool, bool, dict]:
        """Apply one action (7,) ``[dx, dy, dz, rx, ry, rz, grip]`` for one control period.

        Returns (observation, reward, terminated, truncated, info). terminated: success or the
        cube left the workspace; truncated: ``max_steps`` reached. info: ``succeed``,
        ``out_of_workspace``, ``step``.
        """
        if self._done:
            raise RuntimeError("step() after the episode ended: call reset() first")
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (ACTION_DIM,):
            raise ValueError(f"action must have {ACTION_DIM} values {ACTION_NAMES}, got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action contains NaN/inf: {action}")
        action = np.clip(action, -1.0, 1.0)
        _, reward, terminated, _, info = self._env.step(action)
        self._step += 1
        success = bool(info.get("succeed", False))
        truncated = bool(not terminated and self._step >= self.config.max_steps)
        self._done = bool(terminated or truncated)
        obs = self._observe(success=success)
        self._last_obs = obs
        info = {"succeed": success, "out_of_workspace": bool(terminated and not success), "step": self._step}
        return obs, float(reward), bool(terminated), truncated, info

    @property
    def observation(self) -> Observation:
        """The newest observation (after reset, step or set_state)."""
        if self._last_obs is None:
            raise RuntimeError("no observation yet: call reset() first")
        return self._last_obs

    @property
    def done(self) -> bool:
        return self._done

    @property
    def episode_seed(self) -> int | None:
        return self._episode_seed

    @property
    def control_period(self) -> float:
        return float(self._env.control_dt)

    # -- snapshots ---------------------------------------------------------------------------
    def get_state(self) -> SimState:
        """Exact snapshot of the current sim state (independent copy)."""
        env = self._env
        return SimState(data=copy.copy(env.data), z_init=float(env._z_init), z_success=float(env._z_success),
                        step=self._step, done=self._done, episode_seed=self._episode_seed,
                        episode_index=self._episode_index)

    def set_state(self, state: SimState) -> Observation:
        """Restore a snapshot from ``get_state`` (the snapshot stays reusable). Returns the
        observation at that state (cameras re-rendered)."""
        env = self._env
        self._mujoco.mj_copyData(env.data, env.model, state.data)
        env._z_init = state.z_init
        env._z_success = state.z_success
        self._step = state.step
        self._done = state.done
        self._episode_seed = state.episode_seed
        self._episode_index = state.episode_index
        self._last_obs = self._observe(success=bool(env._compute_reward() == 1.0))
        return self._last_obs

    # -- internals ---------------------------------------------------------------------------
    def render(self) -> dict[str, np.ndarray]:
        """camera name -> (size, size, 3) uint8 RGB of the current state."""
        images = {}
        for name, cam_id in self._camera_ids.items():
            self._renderer.update_scene(self._env.data, camera=cam_id)
            images[name] = self._renderer.render().copy()
        return images

    def _observe(self, success: bool) -> Observation:
        env = self._env
        data = env.data
        return Observation(
            images=self.render(),
            joint_pos=data.qpos[env._panda_dof_ids].astype(np.float64),
            joint_vel=data.qvel[env._panda_dof_ids].astype(np.float64),
            gripper=float(data.ctrl[env._gripper_ctrl_id] / MAX_GRIPPER_COMMAND),
            tcp=data.sensor("2f85/pinch_pos").data.astype(np.float64),
            cube=data.sensor("block_pos").data.astype(np.float64),
            success=success,
            step=self._step,
            control_period=self.control_period,
            tcp_quat=data.sensor("2f85/pinch_quat").data.astype(np.float64),
        )

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclass
class RolloutResult:
    """One rollout: actions (T, 7), rewards (T,), success, steps T, terminal reason."""

    actions: np.ndarray
    rewards: np.ndarray
    success: bool
    steps: int
    reason: str  # success / out_of_workspace / time_limit / max_steps
    tcp: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # (T+1, 3) TCP path, metres
    wall_s: float = 0.0

    def discounted_return(self, gamma: float) -> float:
        return float(np.sum(self.rewards * gamma ** np.arange(len(self.rewards))))


def rollout(sim: PickCubeSim, act_fn: Callable[[Observation], np.ndarray], max_steps: int | None = None,
            seed: int | None = None, reset: bool = False) -> RolloutResult:
    """Run ``act_fn(observation) -> action (7,)`` in ``sim`` until the episode ends or
    ``max_steps`` ticks pass.

    Starts from the sim's current state (e.g. right after ``set_state``) unless ``reset`` is
    true (then ``reset(seed)`` first). For ground-truth values: ``set_state(s)`` then
    ``rollout`` n times with a stochastic policy and average ``discounted_return``.
    """
    start = time.perf_counter()
    obs = sim.reset(seed) if reset else sim.observation
    actions, rewards, tcp = [], [], [obs.tcp]
    reason = "max_steps"
    success = obs.success
    while not sim.done and (max_steps is None or len(actions) < max_steps):
        action = np.asarray(act_fn(obs), dtype=np.float64)
        obs, reward, terminated, truncated, info = sim.step(action)
        actions.append(action)
        rewards.append(reward)
        tcp.append(obs.tcp)
        if terminated or truncated:
            success = info["succeed"]
            reason = "success" if success else "out_of_workspace" if terminated else "time_limit"
    return RolloutResult(actions=np.asarray(actions, dtype=np.float64).reshape(-1, ACTION_DIM),
                         rewards=np.asarray(rewards, dtype=np.float64), success=bool(success),
                         steps=len(actions), reason=reason, tcp=np.asarray(tcp),
                         wall_s=time.perf_counter() - start)


def _free_camera(mujoco):
    """The "workspace" camera (see ``WORKSPACE_CAMERA``) as a MuJoCo free camera."""
    camera = mujoco.MjvCamera()
    camera.type = mujoco.mjtCamera.mjCAMERA_FREE
    camera.lookat[:] = WORKSPACE_CAMERA["lookat"]
    camera.azimuth = WORKSPACE_CAMERA["azimuth"]
    camera.elevation = WORKSPACE_CAMERA["elevation"]
    camera.distance = WORKSPACE_CAMERA["distance"]
    return camera
