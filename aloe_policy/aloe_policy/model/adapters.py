"""The policy API the trainer and the nodes rely on, and optional adapters to other VLA libraries.

`FlowMatchingPolicy` (modeling.py) is the built-in, tested implementation. Another VLA plugs in
by providing the same methods (`VLAPolicy`); nothing else in the suite needs to change.
"""

from __future__ import annotations

import os
from typing import Mapping, Protocol, runtime_checkable

import numpy as np
import torch


@runtime_checkable
class VLAPolicy(Protocol):
    """What aloe_critic (trainer) and aloe_policy's policy_node use of a policy.

    obs is the dict of docs/interfaces.md: images {camera: uint8 (B, h, w, 3)}, proprio (B, P),
    task list[str] (B). Chunks are float32 (.., H, A) in action units.
    """

    config: object  # exposes chunk_horizon, action_dim, action_names, control_period_s, camera_names

    @property
    def policy_id(self) -> str:
        """16 hex chars identifying weights + config (content hash)."""

    def sample(self, obs: Mapping, n: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
        """-> (B, n, H, A) action chunks, in bounds."""

    def loss(self, obs: Mapping, chunks, weights=None) -> torch.Tensor:
        """chunks (B, H, A), weights (B,) or None -> per-sample weighted loss (B,)."""

    def fit_normalization(self, proprio, actions) -> None:
        """proprio (N, P), actions (N, H, A)."""

    def predict_chunk(self, obs_single: Mapping) -> np.ndarray:
        """One unbatched observation -> (H, A) numpy chunk."""

    def save_pretrained(self, directory: str | os.PathLike) -> str:
        """Atomic checkpoint write; returns policy_id."""

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str = "cpu") -> "VLAPolicy":
        """Load a checkpoint written by save_pretrained."""


LEROBOT_MISSING = ("the LeRobot adapter needs the optional 'lerobot' package, which is not installed "
                   "(pip install lerobot). The built-in FlowMatchingPolicy needs nothing extra.")


def require_lerobot():
    """Import and return the `lerobot` module, or raise ImportError saying how to get it."""
    try:
        import lerobot
    except ImportError as exc:
        raise ImportError(LEROBOT_MISSING) from exc
    return lerobot


class LeRobotPolicyAdapter:
    """Placeholder for wrapping a LeRobot `PreTrainedPolicy` behind `VLAPolicy`.

    Honest status: only the import guard exists. A LeRobot policy's forward() returns a batch-mean
    loss, while `VLAPolicy.loss` needs per-sample weighted losses, and its observation keys
    ("observation.images.<cam>", "observation.state") need a mapping; neither is written or tested
    here, so construction fails clearly instead of half working.
    """

    def __init__(self, *args, **kwargs):
        require_lerobot()
        raise NotImplementedError("LeRobotPolicyAdapter is not implemented yet (per-sample loss and "
                                  "observation-key mapping are missing); use FlowMatchingPolicy")
