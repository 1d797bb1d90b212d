"""Observation dict -> model tensors, and the normalisation statistics saved with a checkpoint.

Raw observation (docs/interfaces.md), numpy or torch:
    obs["images"][camera]: uint8 (B, h, w, 3) RGB
    obs["proprio"]:        float (B, P)   (7 joint pos [rad], 7 joint vel [rad/s], gripper, EE xyz [m] in sim)
    obs["task"]:           list[str] (B)  language instruction
Prepared batch (what `ObservationEncoder` consumes), on one device:
    batch["images"][camera]: float32 (B, 3, S, S) in [0, 1], S = config.image_size
    batch["proprio"]:        float32 (B, P) normalised: (proprio - mean) / std
    batch["text"]:           float32 (B, text_embed_dim) frozen sentence embedding

Normalisation choice: **mean/std** for both proprio and actions, per dimension (for actions
shared across the H steps of a chunk). Min/max scaling to the action *bounds* would leave the
sim's ~0.03 m deltas as tiny numbers next to unit-variance noise, and min/max of the *data* is set
by single outliers (one operator jerk rescales every chunk); mean/std has neither problem. A
dimension that never varies (the sim ignores rotation) gets std = ``norm_std_floor`` so it maps
to 0 instead of dividing by zero. Sampled actions are un-normalised then clipped to the bounds.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from aloe_data.observation import ObservationError  # one error type for every bad model input (a ValueError)
from .config import PolicyConfig
from .text_encoder import TextEncoder


def as_tensor(x, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """numpy / torch / nested list -> torch tensor (no copy when possible)."""
    if isinstance(x, torch.Tensor):
        t = x
    else:
        try:
            t = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError) as exc:
            raise ObservationError(f"{name} must be an array, got {type(x).__name__}: {exc}") from exc
    return t if dtype is None else t.to(dtype)


def check_finite(t: torch.Tensor, name: str) -> None:
    if not torch.isfinite(t).all():
        bad = (~torch.isfinite(t)).nonzero()[0].tolist()
        raise ObservationError(f"{name} contains NaN or inf (first at index {bad}); refusing to use it")


class Normalizer:
    """Per-dimension mean/std of proprio (P,) and actions (A,), float32, saved in config.json.

    Before `fit`, the identity (mean 0, std 1) is used and ``fitted`` is False.
    """

    def __init__(self, config: PolicyConfig):
        self.config = config
        self.proprio_mean = np.zeros(config.proprio_dim, np.float32)
        self.proprio_std = np.ones(config.proprio_dim, np.float32)
        self.action_mean = np.zeros(config.action_dim, np.float32)
        self.action_std = np.ones(config.action_dim, np.float32)
        self.fitted = False

    def fit(self, proprio, actions) -> None:
        """proprio (N, P); actions (N, H, A) or (M, A) in action units."""
        c = self.config
        p = as_tensor(proprio, "proprio", torch.float64)
        a = as_tensor(actions, "actions", torch.float64)
        if p.ndim != 2 or p.shape[1] != c.proprio_dim or p.shape[0] == 0:
            raise ObservationError(f"fit_normalization: proprio must be (N, {c.proprio_dim}) with N > 0, "
                                   f"got {tuple(p.shape)}")
        if a.ndim not in (2, 3) or a.shape[-1] != c.action_dim or a.shape[0] == 0:
            raise ObservationError(f"fit_normalization: actions must be (N, H, {c.action_dim}) with N > 0, "
                                   f"got {tuple(a.shape)}")
        check_finite(p, "fit_normalization proprio")
        check_finite(a, "fit_normalization actions")
        a = a.reshape(-1, c.action_dim)
        floor = c.norm_std_floor
        self.proprio_mean = p.mean(0).numpy().astype(np.float32)
        self.proprio_std = p.std(0, unbiased=False).clamp_min(floor).numpy().astype(np.float32)
        self.action_mean = a.mean(0).numpy().astype(np.float32)
        self.action_std = a.std(0, unbiased=False).clamp_min(floor).numpy().astype(np.float32)
        self.fitted = True

    # --- apply (torch, on the tensor's device) -------------------------------------------------
    def _stat(self, name: str, like: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(getattr(self, name)).to(device=like.device, dtype=like.dtype)

    def normalize_proprio(self, p: torch.Tensor) -> torch.Tensor:
        return (p - self._stat("proprio_mean", p)) / self._stat("proprio_std", p)

    def normalize_actions(self, a: torch.Tensor) -> torch.Tensor:
        """(..., A) action units -> normalised."""
        return (a - self._stat("action_mean", a)) / self._stat("action_std", a)

    def unnormalize_actions(self, a: torch.Tensor) -> torch.Tensor:
        """(..., A) normalised -> action units (not clipped)."""
        return a * self._stat("action_std", a) + self._stat("action_mean", a)

    # --- persistence ---------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"method": "mean_std", "fitted": self.fitted,
                "proprio_mean": self.proprio_mean.tolist(), "proprio_std": self.proprio_std.tolist(),
                "action_mean": self.action_mean.tolist(), "action_std": self.action_std.tolist()}

    def load_dict(self, data: dict) -> None:
        """Inverse of `to_dict`; raises ValueError naming a missing/mis-sized/non-positive stat."""
        if not isinstance(data, dict):
            raise ValueError(f"normalization must be a JSON object, got {type(data).__name__}")
        if data.get("method") != "mean_std":
            raise ValueError(f"normalization method {data.get('method')!r} is not supported (only 'mean_std')")
        sizes = {"proprio_mean": self.config.proprio_dim, "proprio_std": self.config.proprio_dim,
                 "action_mean": self.config.action_dim, "action_std": self.config.action_dim}
        values = {}
        for name, size in sizes.items():
            if name not in data:
                raise ValueError(f"normalization lacks {name!r}")
            try:
                v = np.asarray(data[name], dtype=np.float32)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"normalization {name!r} is not a list of numbers: {exc}") from exc
            if v.shape != (size,):
                raise ValueError(f"normalization {name!r} has shape {v.shape}, expected ({size},) from the config")
            if not np.all(np.isfinite(v)) or (name.endswith("std") and not np.all(v > 0)):
                raise ValueError(f"normalization {name!r} must be finite{' and > 0' if name.endswith('std') else ''}")
            values[name] = v
        for name, v in values.items():
            setattr(self, name, v)
        self.fitted = bool(data.get("fitted", True))


class ObservationProcessor:
    """Raw observation dict -> prepared batch (see module docstring); validates as it goes."""

    def __init__(self, config: PolicyConfig, normalizer: Normalizer, text_encoder: TextEncoder):
        self.config = config
        self.normalizer = normalizer
        self.text_encoder = text_encoder

    def __call__(self, obs: Mapping, device: torch.device | str = "cpu") -> dict:
        c = self.config
        if not isinstance(obs, Mapping) or not {"images", "proprio", "task"} <= set(obs):
            keys = sorted(obs) if isinstance(obs, Mapping) else type(obs).__name__
            raise ObservationError(f"observation must be a dict with 'images', 'proprio' and 'task'; got {keys}")
        proprio = as_tensor(obs["proprio"], "obs['proprio']")
        if proprio.ndim != 2 or proprio.shape[1] != c.proprio_dim:
            raise ObservationError(f"obs['proprio'] must be (B, {c.proprio_dim}), got {tuple(proprio.shape)}")
        if proprio.dtype.is_complex or proprio.dtype == torch.bool:
            raise ObservationError(f"obs['proprio'] must be real numbers, got {proprio.dtype}")
        proprio = proprio.to(device=device, dtype=torch.float32)
        check_finite(proprio, "obs['proprio']")
        batch = proprio.shape[0]

        tasks = obs["task"]
        if isinstance(tasks, str):
            tasks = [tasks]
        if not isinstance(tasks, (list, tuple)) or not all(isinstance(t, str) for t in tasks):
            raise ObservationError(f"obs['task'] must be a list of B strings, got {type(tasks).__name__}")
        if len(tasks) != batch:
            raise ObservationError(f"obs['task'] has {len(tasks)} entries but proprio has batch size {batch}")

        images = obs["images"]
        if not isinstance(images, Mapping):
            raise ObservationError(f"obs['images'] must be a dict camera -> (B, h, w, 3) uint8, "
                                   f"got {type(images).__name__}")
        missing = [cam for cam in c.camera_names if cam not in images]
        if missing:
            raise ObservationError(f"obs['images'] lacks cameras {missing}; the policy needs {list(c.camera_names)}, "
                                   f"got {sorted(images)}")
        prepared = {cam: self.prepare_image(images[cam], cam, batch, device) for cam in c.camera_names}
        return {"images": prepared,
                "proprio": self.normalizer.normalize_proprio(proprio),
                "text": self.text_encoder.encode(list(tasks)).to(device)}

    def prepare_image(self, image, camera: str, batch: int, device) -> torch.Tensor:
        """uint8 (B, h, w, 3) RGB -> float32 (B, 3, S, S) in [0, 1], resized (bilinear, antialiased)."""
        name = f"obs['images'][{camera!r}]"
        img = as_tensor(image, name)
        if img.dtype != torch.uint8:
            raise ObservationError(f"{name} must be uint8 RGB (0-255), got {img.dtype}")
        if img.ndim != 4 or img.shape[-1] != 3 or img.shape[1] == 0 or img.shape[2] == 0:
            raise ObservationError(f"{name} must be (B, h, w, 3) RGB, got {tuple(img.shape)}")
        if img.shape[0] != batch:
            raise ObservationError(f"{name} has batch size {img.shape[0]} but proprio has {batch}")
        x = img.to(device).permute(0, 3, 1, 2).float().div_(255.0)
        size = self.config.image_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            x = x.clamp_(0.0, 1.0)
        return x.contiguous()


def check_chunks(chunks, config: PolicyConfig, batch: int, device) -> torch.Tensor:
    """Action chunks (B, H, A) in action units -> float32 tensor on device, validated."""
    a = as_tensor(chunks, "chunks")
    expected = (batch, config.chunk_horizon, config.action_dim)
    if tuple(a.shape) != expected:
        raise ObservationError(f"chunks must be (B, H, A) = {expected}, got {tuple(a.shape)}")
    a = a.to(device=device, dtype=torch.float32)
    check_finite(a, "chunks")
    return a


def single_to_batch(obs: Mapping) -> dict:
    """One unbatched observation (images (h, w, 3), proprio (P,), task str) -> batch of 1.

    Already-batched inputs (B = 1) pass through unchanged.
    """
    if not isinstance(obs, Mapping) or not {"images", "proprio", "task"} <= set(obs):
        raise ObservationError("observation must be a dict with 'images', 'proprio' and 'task'")
    proprio = as_tensor(obs["proprio"], "obs['proprio']")
    if proprio.ndim != 1:
        return dict(obs)
    images = obs["images"] if isinstance(obs["images"], Mapping) else {}
    task = obs["task"]
    return {"images": {cam: as_tensor(img, f"obs['images'][{cam!r}]")[None] for cam, img in images.items()},
            "proprio": proprio[None],
            "task": [task] if isinstance(task, str) else list(task)}
