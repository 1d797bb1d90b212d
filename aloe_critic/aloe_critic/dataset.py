"""Episodes -> chunked transitions for the critic and the trainer (bags -> episodes: aloe_data.ingestion).

A transition at tick t (``TransitionDataset``):

* ``chunks``: A_t = a_t .. a_{t+H-1}. Past the episode end the chunk is padded by repeating
  the last executed action; with a terminal end (done) the padded steps earn no reward, so
  padding never changes R_t^H or the target.
* ``returns``: R_t^H = sum_{i<H} gamma^i r_{t+i} (rewards past the end are 0).
* ``next`` observation o_{t+H}; ``done`` = the chunk reaches the end of an episode that ended
  in SUCCESS or FAILURE. An episode cut without an outcome (ABORT, INCOMPLETE after a crash) is
  not terminal: its last H-1 transitions bootstrap from the last recorded observation (the best available
  stand-in for the unrecorded o_{t+H}).
* ``mc_returns``: discounted return-to-go G_t = sum_i gamma^i r_{t+i} to the episode end
  (the Monte-Carlo value of the behaviour; used by the ``progress`` baseline).
* provenance: bag, episode, policy_id, source mix fractions over the chunk's real ticks
  (POLICY, HUMAN, HOLD), ``is_intervention`` (any HUMAN tick in the chunk), episode outcome.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from aloe_data.ingestion import Episode
from aloe_data.observation import format_mismatch, image_kind
from aloe_data.schema import SOURCE_HUMAN, SOURCE_POLICY

log = logging.getLogger(__name__)


def check_camera_contract(policy_config, dataset: TransitionDataset, checkpoint,
                          ingestion_depth_range_m: float = 0.0) -> None:
    """Refuse bags whose cameras sent another kind of image or aspect ratio than the policy's
    checkpoint records (PolicyConfig.camera_formats), naming the camera: trained on, the policy
    would learn from inputs it never sees on its robot, or the reverse."""
    depth = [cam for cam, fmt in dataset.camera_formats.items() if image_kind(fmt.partition(" ")[0]) == "depth"]
    if depth and policy_config.depth_range_m != ingestion_depth_range_m:
        raise ValueError(f"depth camera(s) {depth}: these bags were decoded with depth_range_m "
                         f"{ingestion_depth_range_m:g} but the policy ({checkpoint}) maps {policy_config.depth_range_m:g} "
                         "m to white; decode with the policy's range (ingestion depth_range_m)")
    for cam, trained in zip(policy_config.camera_names, policy_config.camera_formats):
        seen = dataset.camera_formats.get(cam)
        problem = format_mismatch(trained, seen) if seen else ""
        if problem:
            raise ValueError(f"camera {cam!r} of these bags {problem} (checkpoint {checkpoint}); record with the "
                             "camera setup the policy was trained on, or train a fresh policy (no --policy-in)")


# ---------------------------------------------------------------------------------------------
# Chunked transitions
# ---------------------------------------------------------------------------------------------

def discounted_chunk_returns(rewards: np.ndarray, horizon: int, gamma: float) -> np.ndarray:
    """R_t^H = sum_{i<H} gamma^i r_{t+i} for every t of one episode (rewards past the end are 0)."""
    T = len(rewards)
    padded = np.concatenate([np.asarray(rewards, np.float64), np.zeros(horizon)])
    out = np.zeros(T)
    for i in range(horizon):
        out += gamma ** i * padded[i:i + T]
    return out.astype(np.float32)


def discounted_return_to_go(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """G_t = sum_{i>=0} gamma^i r_{t+i} to the episode end (Monte-Carlo return of the behaviour)."""
    out = np.zeros(len(rewards))
    acc = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        acc = float(rewards[t]) + gamma * acc
        out[t] = acc
    return out.astype(np.float32)


@dataclass
class TransitionBatch:
    """Torch batch of B transitions. obs / next_obs follow docs/interfaces.md (images uint8
    (B, h, w, 3), proprio (B, P) float32, task list[str]); chunks / next_chunks: (B, H, A) float32;
    returns (R_t^H), mc_returns, done: (B,) float32; obs_tick / next_tick: (B,) int64 global tick
    ids (keys of per-observation caches such as the policy sample bank); index: (B,) transition ids."""

    obs: dict
    chunks: torch.Tensor
    returns: torch.Tensor
    done: torch.Tensor
    next_obs: dict
    next_chunks: torch.Tensor
    mc_returns: torch.Tensor
    obs_tick: torch.Tensor
    next_tick: torch.Tensor
    index: torch.Tensor

    def to(self, device) -> "TransitionBatch":
        def mv(x):
            if isinstance(x, torch.Tensor):
                return x.to(device)
            if isinstance(x, dict):
                return {k: mv(v) for k, v in x.items()}
            return x
        return TransitionBatch(**{k: mv(v) for k, v in self.__dict__.items()})


def observation_rows(obs: dict | None, rows: slice) -> dict | None:
    """Rows ``rows`` of an observation batch (images dict, proprio, task list); None stays None."""
    if obs is None:
        return None
    return {k: ({c: v[rows] for c, v in x.items()} if isinstance(x, dict) else x[rows]) for k, x in obs.items()}


class TransitionDataset(torch.utils.data.Dataset):
    """Chunked transitions of a list of episodes (see the module docstring for the semantics).

    Columns are numpy arrays over transitions (``len(self)`` of them): ``chunks`` (N, H, A),
    ``returns`` (N,), ``mc_returns`` (N,), ``done`` (N,), ``obs_tick`` / ``next_tick`` (N,)
    global tick ids, ``next_transition`` (N,) the transition at t+H (the last one past the episode end),
    and provenance: ``episode`` (N,), ``bag`` list, ``policy_id`` (N,) object, ``source_fraction``
    (N, 3) over POLICY/HUMAN/HOLD, ``is_intervention`` (N,) bool, ``outcome`` (N,) object.
    ``filter(...)`` returns a view restricted to some provenance.
    """

    def __init__(self, episodes: Sequence[Episode], chunk_horizon: int, gamma: float):
        if not episodes:
            raise ValueError("no episodes: nothing to build transitions from (were all bags skipped?)")
        self.episodes = list(episodes)
        self.chunk_horizon, self.gamma = int(chunk_horizon), float(gamma)
        H = self.chunk_horizon
        dims = {e.actions.shape[1] for e in episodes}
        if len(dims) != 1:
            raise ValueError(f"episodes have different action sizes {sorted(dims)}")
        self.action_dim = dims.pop()
        self.cameras = sorted(episodes[0].images)
        for e in episodes:
            if sorted(e.images) != self.cameras:
                raise ValueError(f"episode {e.bag or e.episode_id} has cameras {sorted(e.images)}, "
                                 f"expected {self.cameras}")
        self.camera_formats: dict[str, str] = {}  # camera -> the format of its first recorded episode
        for e in episodes:
            for cam, fmt in e.camera_formats.items():
                first = self.camera_formats.setdefault(cam, fmt)
                if format_mismatch(first, fmt):
                    raise ValueError(f"camera {cam!r}: episode {e.bag or e.episode_id} {format_mismatch(first, fmt)} "
                                     f"(first episode: {first}); train on one camera setup per camera name")
        lengths = np.array([len(e) for e in episodes])
        self.tick_offset = np.concatenate([[0], np.cumsum(lengths)])
        self.num_ticks = int(self.tick_offset[-1])
        self.tick_episode = np.repeat(np.arange(len(episodes)), lengths)
        self.tick_in_episode = np.concatenate([np.arange(n) for n in lengths])
        self.proprio = np.concatenate([np.asarray(e.proprio, np.float32) for e in episodes])
        self.tasks = [e.task for e in episodes]
        self.bags = [e.bag for e in episodes]

        cols = {k: [] for k in ("chunks", "returns", "mc_returns", "done", "obs_tick", "next_tick",
                                "next_transition", "policy_id", "source_fraction", "is_intervention", "outcome")}
        for ei, e in enumerate(episodes):
            T = len(e)
            off = self.tick_offset[ei]
            t = np.arange(T)
            steps = np.minimum(t[:, None] + np.arange(H)[None, :], T - 1)   # pad: repeat last action
            cols["chunks"].append(np.asarray(e.actions, np.float32)[steps])
            cols["returns"].append(discounted_chunk_returns(e.rewards, H, gamma))
            cols["mc_returns"].append(discounted_return_to_go(e.rewards, gamma))
            cols["done"].append(((t + H >= T) & e.terminal).astype(np.float32))
            cols["obs_tick"].append(off + t)
            cols["next_tick"].append(off + np.minimum(t + H, T - 1))
            cols["next_transition"].append(off + np.minimum(t + H, T - 1))  # consistent with next_tick
            src = np.asarray(e.sources)
            real = (t[:, None] + np.arange(H)[None, :]) < T
            real_src = np.where(real, src[steps], 255)
            n_real = real.sum(1, keepdims=True)
            frac = np.stack([(real_src == s).sum(1) for s in range(3)], 1) / n_real
            cols["source_fraction"].append(frac.astype(np.float32))
            cols["is_intervention"].append((real_src == SOURCE_HUMAN).any(1))
            pidx = np.where(real, np.asarray(e.policy_index)[steps], -1)    # (T, H), -1: not a policy tick
            first = pidx[t, np.argmax(pidx >= 0, axis=1)]                       # first policy tick's id index
            names = np.array(list(e.policy_ids) + [""], dtype=object)
            pid = names[np.where((pidx >= 0).any(1), first, len(e.policy_ids))]
            cols["policy_id"].append(pid)
            cols["outcome"].append(np.full(T, e.outcome, dtype=object))
        for k, v in cols.items():
            setattr(self, k, np.concatenate(v))
        self.episode = self.tick_episode  # transitions are one per tick
        self._view = np.arange(self.num_ticks)

    # -- views ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._view)

    @property
    def indices(self) -> np.ndarray:
        """Transition ids (rows of the column arrays) in this view."""
        return self._view

    def filter(self, *, policy_id: str | Sequence[str] | None = None, outcome: str | Sequence[str] | None = None,
               is_intervention: bool | None = None, min_policy_fraction: float | None = None,
               bags: Sequence[str] | None = None, mask: np.ndarray | None = None) -> "TransitionDataset":
        """A view restricted by provenance (all given conditions must hold). Columns are shared."""
        keep = np.ones(len(self.done), bool)
        as_set = lambda v: {v} if isinstance(v, str) else set(v)  # noqa: E731
        if policy_id is not None:
            keep &= np.isin(self.policy_id, list(as_set(policy_id)))
        if outcome is not None:
            keep &= np.isin(self.outcome, [o.upper() for o in as_set(outcome)])
        if is_intervention is not None:
            keep &= self.is_intervention == bool(is_intervention)
        if min_policy_fraction is not None:
            keep &= self.source_fraction[:, SOURCE_POLICY] >= min_policy_fraction
        if bags is not None:
            wanted = {str(Path(b)) for b in bags}
            keep &= np.isin(self.episode, [i for i, b in enumerate(self.bags) if str(Path(b)) in wanted])
        if mask is not None:
            keep &= np.asarray(mask, bool)
        view = object.__new__(TransitionDataset)
        view.__dict__.update(self.__dict__)
        view._view = self._view[keep[self._view]]
        return view

    # -- observations --------------------------------------------------------------------------
    def observations(self, ticks) -> dict:
        """Observations of global tick ids -> obs dict (torch; images uint8 (B, h, w, 3))."""
        ticks = np.asarray(ticks, np.int64)
        ep = self.tick_episode[ticks]
        local = self.tick_in_episode[ticks]
        images = {}
        for cam in self.cameras:
            first = np.asarray(self.episodes[0].images[cam])
            out = np.empty((len(ticks),) + first.shape[1:], np.uint8)
            for e in np.unique(ep):
                sel = np.flatnonzero(ep == e)
                out[sel] = np.asarray(self.episodes[e].images[cam][local[sel]])
            images[cam] = torch.from_numpy(out)
        return {"images": images, "proprio": torch.from_numpy(self.proprio[ticks]),
                "task": [self.tasks[e] for e in ep]}

    def batch(self, transitions, observations: bool = True) -> TransitionBatch:
        """Transition ids (rows, as in ``indices``) -> TransitionBatch. ``observations=False``
        leaves obs / next_obs None (callers holding per-tick features skip the image reads)."""
        i = np.asarray(transitions, np.int64)
        nt = self.next_transition[i]
        return TransitionBatch(
            obs=self.observations(self.obs_tick[i]) if observations else None, chunks=torch.from_numpy(self.chunks[i]),
            returns=torch.from_numpy(self.returns[i]), done=torch.from_numpy(self.done[i]),
            next_obs=self.observations(self.next_tick[i]) if observations else None,
            next_chunks=torch.from_numpy(self.chunks[nt]),
            mc_returns=torch.from_numpy(self.mc_returns[i]), obs_tick=torch.from_numpy(self.obs_tick[i]),
            next_tick=torch.from_numpy(self.next_tick[i]), index=torch.from_numpy(i))

    def sample(self, batch_size: int, rng: np.random.Generator, weights: np.ndarray | None = None) -> TransitionBatch:
        """Random batch (with replacement) from this view; ``weights`` (len(self),) >= 0 makes
        it non-uniform (e.g. up-weight interventions by provenance)."""
        if weights is None:
            pos = rng.integers(0, len(self._view), size=batch_size)
        else:
            w = np.asarray(weights, np.float64)
            pos = rng.choice(len(self._view), size=batch_size, p=w / w.sum())
        return self.batch(self._view[pos])

    def iter_batches(self, batch_size: int) -> Iterator[TransitionBatch]:
        """Every transition of the view once, in order."""
        for s in range(0, len(self._view), batch_size):
            yield self.batch(self._view[s:s + batch_size])

    def __getitem__(self, k: int) -> int:
        """The k-th transition id of the view. With ``collate_fn=dataset.batch`` a torch
        DataLoader yields TransitionBatch objects:
        ``DataLoader(ds, batch_size=256, shuffle=True, collate_fn=ds.batch)``."""
        return int(self._view[k])

    def provenance(self, transitions) -> list[dict]:
        """Per transition: bag, episode_id, policy_id, source fractions, is_intervention, outcome."""
        out = []
        for i in np.asarray(transitions, np.int64):
            e = self.episodes[self.episode[i]]
            f = self.source_fraction[i]
            out.append({"bag": e.bag, "episode_id": e.episode_id, "tick": int(self.tick_in_episode[i]),
                        "policy_id": str(self.policy_id[i]), "policy_fraction": float(f[0]),
                        "human_fraction": float(f[1]), "hold_fraction": float(f[2]),
                        "is_intervention": bool(self.is_intervention[i]), "outcome": str(self.outcome[i])})
        return out

    def behaviour_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(proprio (N, P), chunks (N, H, A)) of this view: what fit_normalization needs."""
        return self.proprio[self.obs_tick[self._view]], self.chunks[self._view]
