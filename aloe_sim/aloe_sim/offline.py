"""The human-in-the-loop episode without ROS: the same policy, operator and data, in one process.

Used where ROS adds nothing to the learning (the evidence benchmarks, fast studies): a policy
runs chunks open-loop for ``replan_every`` ticks, the scripted operator supervises and takes
over exactly as ``operator_node`` does, and the episode comes back as an ``aloe_critic``
``Episode`` with the same columns an ingested bag has (images, proprio, executed actions and
their sources, rewards, outcome).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from aloe_data.ingestion import Episode
from aloe_data.schema import SOURCE_HUMAN, SOURCE_POLICY

from .env import PickCubeSim
from .scripted import OperatorSupervisor

DEFAULT_TASK = "pick up the cube"


@dataclass
class EpisodeStats:
    success: bool
    steps: int
    human_ticks: int
    takeovers: int
    seed: int
    correction_bad: tuple = ()  # per takeover, in order: a bad correction (SupervisorConfig.bad_correction_prob)

    @property
    def intervention_rate(self) -> float:
        return self.human_ticks / max(1, self.steps)


def run_episode(sim: PickCubeSim, seed: int, policy=None, supervisor: OperatorSupervisor | None = None,
                replan_every: int = 5, task: str = DEFAULT_TASK, policy_seed: int = 0,
                episode_id: str = "") -> tuple[Episode, EpisodeStats]:
    """One episode; ``policy`` (FlowMatchingPolicy or None) acts unless ``supervisor`` takes over.

    With no policy and no active supervisor the robot holds (zero action), as the executor does.
    Recorded per tick t: the observation before the action, the executed action and its source.
    """
    obs = sim.reset(seed)
    if supervisor is not None:
        supervisor.reset()
    generator = torch.Generator().manual_seed(policy_seed)
    images = {cam: [] for cam in obs.images}
    proprio, actions, sources, rewards = [], [], [], []
    chunk, k, last_action = None, 0, None
    success = False
    while not sim.done:
        action, source = np.zeros(7), 2  # HOLD
        if policy is not None and (chunk is None or k >= min(replan_every, len(chunk))):
            single = {"images": obs.images, "proprio": obs.proprio(), "task": task}
            chunk, k = policy.predict_chunk(single, generator=generator), 0
        if chunk is not None:
            action, source = chunk[k].astype(np.float64), SOURCE_POLICY
            k += 1
        if supervisor is not None:
            active, human = supervisor.decide(obs.task_state(), last_action, obs.step)
            if active:
                action, source = human, SOURCE_HUMAN
                chunk = None  # the policy re-plans from the state the operator hands back
        for cam, img in obs.images.items():
            images[cam].append(img)
        proprio.append(obs.proprio())
        actions.append(np.clip(action, -1.0, 1.0))
        sources.append(source)
        obs, reward, terminated, truncated, info = sim.step(actions[-1])
        rewards.append(reward)
        last_action = actions[-1]
        success = success or info["succeed"]
    outcome = "SUCCESS" if success else "FAILURE"
    policy_id = policy.policy_id if policy is not None else ""
    episode = Episode.from_arrays(np.asarray(actions), np.asarray(proprio), np.asarray(rewards),
                                  images={c: np.asarray(v) for c, v in images.items()},
                                  sources=np.asarray(sources), outcome=outcome, task=task,
                                  policy_id=policy_id, episode_id=episode_id or f"seed{seed}")
    stats = EpisodeStats(success=success, steps=len(actions), human_ticks=int(np.sum(np.asarray(sources) == SOURCE_HUMAN)),
                         takeovers=supervisor.takeovers if supervisor is not None else 0, seed=seed,
                         correction_bad=tuple(supervisor.correction_bad) if supervisor is not None else ())
    return episode, stats


@dataclass
class PhaseSummary:
    episodes: list[Episode] = field(default_factory=list)
    stats: list[EpisodeStats] = field(default_factory=list)

    @property
    def success_rate(self) -> float:
        return float(np.mean([s.success for s in self.stats])) if self.stats else 0.0

    @property
    def intervention_rate(self) -> float:
        """Fraction of all ticks driven by the operator."""
        return float(np.sum([s.human_ticks for s in self.stats]) / max(1, np.sum([s.steps for s in self.stats])))

    @property
    def mean_length(self) -> float:
        return float(np.mean([s.steps for s in self.stats])) if self.stats else 0.0


def run_episodes(sim: PickCubeSim, seeds, policy=None, supervisor=None, replan_every: int = 5,
                 task: str = DEFAULT_TASK, progress: bool = False, desc: str = "episodes") -> PhaseSummary:
    summary = PhaseSummary()
    iterator = list(seeds)
    if progress:
        from aloe_data.progress import progress_bar
        iterator = progress_bar(iterator, desc=desc, unit="ep")
    for i, seed in enumerate(iterator):
        ep, st = run_episode(sim, int(seed), policy, supervisor, replan_every, task, policy_seed=int(seed),
                             episode_id=f"{desc}-{i:03d}")
        summary.episodes.append(ep)
        summary.stats.append(st)
    return summary
