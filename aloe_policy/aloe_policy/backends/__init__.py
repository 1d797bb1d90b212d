"""Policy backends: what policy_node, the critic's sample bank and the improvement need of a VLA.

A backend is any object with

* ``config``: the robot contract it was made for (a ``PolicyConfig``: camera names and image size,
  proprio size and names, action names and bounds, chunk horizon, control period);
* ``policy_id``: a short string naming these exact weights (content hash where one exists);
* ``sample(obs, n, generator=None) -> (B, n, H, A)`` float32 chunks for an observation batch
  (``obs``: images {camera: uint8 (B, h, w, 3)}, proprio (B, P), task list[str]);
* ``predict_chunk(obs_single, generator=None) -> (H, A)`` numpy, for one observation;
* trainable backends also ``loss(obs, chunks, weights)`` (per-sample, weighted), ``parameters()``,
  ``save_pretrained(dir)``; backends without a loss get their advantages exported instead.

Backends are found by name in the ``aloe_policy.backends`` entry-point group (setup.py), so another
package adds one without touching this suite: ``flow_matching`` (the built-in model, a checkpoint
directory) and ``openpi_remote`` (a pi0 / pi0.5 or any policy served over openpi's websocket
protocol; the source is ``ws://host:port``) ship here.
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points
from typing import Mapping, Protocol, runtime_checkable

import numpy as np
import torch

GROUP = "aloe_policy.backends"
DEFAULT_BACKEND = "flow_matching"


@runtime_checkable
class PolicyBackend(Protocol):
    """What policy_node and the critic's sample bank use of any policy (see the module docstring)."""

    config: object

    @property
    def policy_id(self) -> str: ...

    def sample(self, obs: Mapping, n: int = 1, generator: torch.Generator | None = None) -> torch.Tensor: ...

    def predict_chunk(self, obs_single: Mapping, generator: torch.Generator | None = None) -> np.ndarray: ...


@runtime_checkable
class TrainableBackend(PolicyBackend, Protocol):
    """A backend the suite can improve in process (advantage-weighted flow matching)."""

    def loss(self, obs: Mapping, chunks, weights=None, *, generator=None) -> torch.Tensor: ...

    def parameters(self): ...

    def fit_normalization(self, proprio, actions) -> None: ...

    def save_pretrained(self, directory: str | os.PathLike) -> str: ...


class BackendError(RuntimeError):
    """A backend cannot be found, loaded or reached; the message says what to do."""


def backend_names() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=GROUP))


def load_backend(name: str, source: str, device: str = "cpu", **options):
    """The backend ``name`` loaded from ``source`` (a checkpoint directory, a ws:// address...)."""
    found = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not found:
        raise BackendError(f"no policy backend {name!r}; installed: {backend_names() or 'none'} "
                           f"(entry-point group {GROUP!r}: is the package that provides it installed?)")
    return found[0].load()(source, device=device, **options)


def load_flow_matching(source: str, device: str = "cpu"):
    """The built-in flow-matching VLA from a checkpoint directory, fully checked (files, hash, a test
    forward pass: model.load_checkpoint); raises CheckpointError saying what is wrong."""
    from aloe_policy.model import load_checkpoint

    return load_checkpoint(source, device=device)
