"""Shared pieces of the evidence benchmarks (bench/ope_accuracy.py, bench/improvement.py).

Everything here runs without ROS, on the ROS-free offline path (``aloe_sim.offline.run_episode``)
and the library's learning functions. The studies use the **state-only** sim for speed:

* the policy's proprio is the robot's 18 values **plus the privileged cube position (3) and the
  episode time t / max_steps (1)** = 22 values. The cube position replaces what the camera would
  show; t makes the 100-tick time limit part of the state, so values are Markov in the
  observation (otherwise no critic can know that an episode is about to be cut off);
* ``FlowMatchingPolicy`` needs at least one camera: it gets one constant 8x8 black image
  (``blank``), so the CNN sees nothing and costs nothing. The model, losses and critic are the
  library's, unchanged; only the observation is cheaper than a camera.

``PrivilegedSim`` wraps ``PickCubeSim`` to produce those observations and, optionally, to save
exact sim snapshots (``get_state``) at random ticks of the episodes it runs: the recorded states
whose true values the OPE benchmark measures by rollouts.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from aloe_critic.dataset import TransitionDataset
from aloe_critic.improvement import ImprovementConfig, improve_policy
from aloe_sim.env import Observation, PickCubeSim, rollout
from aloe_sim.offline import DEFAULT_TASK

BLANK_CAMERA = "blank"
BLANK_SIZE = 8
PROPRIO_DIM = 22  # 18 robot values + cube xyz (privileged) + t / max_steps
_BLANK = np.zeros((BLANK_SIZE, BLANK_SIZE, 3), np.uint8)

# Small network: a few ms per inference and ~15 ms per batch-64 training step on one CPU thread.
STUDY_POLICY = dict(camera_names=(BLANK_CAMERA,), image_size=BLANK_SIZE, cnn_channels=(4,), cnn_pool_size=1,
                    proprio_dim=PROPRIO_DIM, hidden_dim=128, head_hidden_dim=256, head_layers=2)


@dataclasses.dataclass
class PrivilegedObservation(Observation):
    """Observation whose ``proprio()`` is (22,): robot proprio, cube xyz (m), t / max_steps."""

    max_steps: int = 100

    def proprio(self) -> np.ndarray:
        return np.concatenate([super().proprio(), self.cube, [self.step / self.max_steps]]).astype(np.float32)


class PrivilegedSim:
    """``PickCubeSim`` seen through ``PrivilegedObservation`` (blank camera, privileged proprio).

    snapshot_prob: probability that the state *before* each tick's action is saved
    (``snapshots``: list of (episode number, tick, SimState)); the episode number counts
    ``reset`` calls of this wrapper from 0.
    """

    def __init__(self, sim: PickCubeSim, snapshot_prob: float = 0.0, seed: int = 0):
        self.sim = sim
        self.snapshot_prob = float(snapshot_prob)
        self._rng = np.random.default_rng(seed)
        self.snapshots: list[tuple[int, int, object]] = []
        self.episode = -1

    def _wrap(self, obs: Observation) -> PrivilegedObservation:
        fields = {f.name: getattr(obs, f.name) for f in dataclasses.fields(Observation)}
        fields["images"] = {BLANK_CAMERA: _BLANK}
        return PrivilegedObservation(**fields, max_steps=self.sim.config.max_steps)

    def reset(self, seed=None) -> PrivilegedObservation:
        self.episode += 1
        return self._wrap(self.sim.reset(seed))

    def step(self, action):
        if self.snapshot_prob > 0 and self._rng.random() < self.snapshot_prob:
            self.snapshots.append((self.episode, self.sim.observation.step, self.sim.get_state()))
        obs, reward, terminated, truncated, info = self.sim.step(action)
        return self._wrap(obs), reward, terminated, truncated, info

    @property
    def observation(self) -> PrivilegedObservation:
        return self._wrap(self.sim.observation)

    @property
    def done(self) -> bool:
        return self.sim.done

    def get_state(self):
        return self.sim.get_state()

    def set_state(self, state) -> PrivilegedObservation:
        return self._wrap(self.sim.set_state(state))


def make_sim(max_steps: int = 100, seed: int = 0, snapshot_prob: float = 0.0) -> PrivilegedSim:
    return PrivilegedSim(PickCubeSim(cameras=(), max_steps=max_steps, seed=seed), snapshot_prob, seed)


def make_policy(chunk_horizon: int, seed: int, text_encoder=None):
    """A fresh study-sized FlowMatchingPolicy (weights seeded)."""
    from aloe_policy.model import FlowMatchingPolicy, PolicyConfig

    torch.manual_seed(seed)
    return FlowMatchingPolicy(PolicyConfig(chunk_horizon=chunk_horizon, **STUDY_POLICY), text_encoder=text_encoder)


def clone_policy(policy):
    """An independent copy of a study policy (weights + normalisation; the frozen text encoder is shared)."""
    from aloe_policy.model import FlowMatchingPolicy

    twin = FlowMatchingPolicy(policy.config, text_encoder=policy.text_encoder)
    twin.load_state_dict(policy.state_dict())
    twin.normalizer.load_dict(policy.normalizer.to_dict())
    twin.eval()
    return twin


def behaviour_clone(policy, episodes, steps: int, seed: int, gamma: float = 0.99, lr: float = 1e-3,
                    batch_size: int = 64, fit_normalization: bool = True) -> float:
    """BC (``improve_policy`` with weights 1) on all chunks of ``episodes``; returns seconds."""
    start = time.perf_counter()
    dataset = TransitionDataset(episodes, policy.config.chunk_horizon, gamma)
    if fit_normalization:
        policy.fit_normalization(*dataset.behaviour_arrays())
    improve_policy(policy, dataset, None, ImprovementConfig(policy_steps=steps, policy_lr=lr,
                                                            policy_batch_size=batch_size), seed=seed)
    return time.perf_counter() - start


class ChunkedPolicyActor:
    """``act(obs) -> action``: the first ``prefix`` actions (if any), then ``policy`` chunks run
    open-loop for ``replan_every`` ticks each (as ``run_episode`` executes a policy)."""

    def __init__(self, policy, replan_every: int, generator: torch.Generator, prefix=None, task: str = DEFAULT_TASK):
        self.policy, self.replan_every, self.generator, self.task = policy, replan_every, generator, task
        self.prefix = [] if prefix is None else list(np.asarray(prefix, np.float64))
        self.chunk, self.k = None, 0

    def __call__(self, obs) -> np.ndarray:
        if self.prefix:
            return self.prefix.pop(0)
        if self.chunk is None or self.k >= min(self.replan_every, len(self.chunk)):
            single = {"images": obs.images, "proprio": obs.proprio(), "task": self.task}
            self.chunk, self.k = self.policy.predict_chunk(single, generator=self.generator), 0
        self.k += 1
        return self.chunk[self.k - 1].astype(np.float64)


def policy_returns(sim: PrivilegedSim, state, policy, n: int, gamma: float, replan_every: int, seed: int,
                   prefix=None) -> np.ndarray:
    """Discounted returns (n,) of: restore ``state``, execute ``prefix`` (recorded actions, (h, 7),
    deterministic: done once), then follow ``policy`` to the episode end; n independent rollouts
    (different policy noise). Rewards from the saved state's tick on, discounted from it."""
    sim.set_state(state)
    pre = rollout(sim, ChunkedPolicyActor(policy, replan_every, None, prefix), max_steps=len(prefix)) \
        if prefix is not None and len(prefix) else None
    g_pre = pre.discounted_return(gamma) if pre is not None else 0.0
    k = pre.steps if pre is not None else 0
    if sim.done:
        return np.full(n, g_pre)
    after = sim.get_state()
    out = np.empty(n)
    for i in range(n):
        sim.set_state(after)
        gen = torch.Generator().manual_seed(seed * 100_003 + i)
        res = rollout(sim, ChunkedPolicyActor(policy, replan_every, gen))
        out[i] = g_pre + gamma ** k * res.discounted_return(gamma)
    return out


def provenance() -> dict:
    """The code a result was measured with: git HEAD and the library files that differ from it
    (other engineers edit the packages while benchmarks run; a run imports them once at start)."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    run = lambda *cmd: subprocess.run(cmd, cwd=root, capture_output=True, text=True).stdout.rstrip()  # noqa: E731
    return {"git_head": run("git", "rev-parse", "HEAD").strip(),
            "modified_vs_head": run("git", "status", "--short", "--", "aloe_critic", "aloe_sim", "aloe_policy",
                                    "bench").splitlines()}


def bootstrap_interval(values, rng: np.random.Generator, n_boot: int = 2000, stat=np.mean) -> tuple[float, float]:
    """95 % percentile bootstrap interval of ``stat`` over ``values`` (resampled with replacement)."""
    values = np.asarray(values, np.float64)
    if len(values) == 0:
        return (float("nan"), float("nan"))
    idx = rng.integers(0, len(values), size=(n_boot, len(values)))
    boots = np.array([stat(values[i]) for i in idx])
    return (float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5)))
