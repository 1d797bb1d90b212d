"""The built-in VLA: `ObservationEncoder` + a flow-matching action-chunk head (`FlowMatchingPolicy`).

Flow matching as rectified flow (Liu et al. 2022; the pi0 action expert uses the same recipe):
    x0 ~ N(0, I) noise, x1 = normalised action chunk (H, A), t ~ U(0, 1)
    x_t = (1 - t) x0 + t x1,   target velocity u = x1 - x0
    loss = || v_theta(x_t, t, o) - u ||^2  (mean over H, A; one value per sample, times its weight)
Sampling integrates dx/dt = v_theta(x, t, o) from t = 0 (noise) to t = 1 with `flow_steps` Euler
steps, un-normalises and clips to the action bounds.

Advantage conditioning (``advantage_conditioning``; RECAP in pi*0.6, CFGRL by Frans et al. 2025):
the field also takes an indicator c in {unknown, negative, positive} of the chunk's advantage,
    loss = || v_theta(x_t, t, o, c) - u ||^2,     c = positive if A > threshold else negative,
           replaced by unknown with probability p (so the unconditioned field is learnt too),
and sampling conditions on positive, optionally with classifier-free guidance g:
    v = v_theta(x, t, o, positive) + g (v_theta(x, t, o, positive) - v_theta(x, t, o, unknown)).
Every chunk trains the policy (nothing is discarded or down-weighted); the critic only says which
ones the policy should resemble.

Checkpoint = a directory with ``model.safetensors`` (trainable weights) and ``config.json``
(format version, PolicyConfig, normalisation stats, text-embedding cache, policy_id).
policy_id = first 16 hex chars of sha256(weights bytes + canonical JSON of config and
normalisation); the text cache is excluded because it is a cache of a frozen encoder.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import nn

from aloe_data.atomic import fsync_path, install_dir

from .config import ConfigError, PolicyConfig
from .processing import (Normalizer, ObservationProcessor, as_tensor, check_chunks, check_finite,
                         single_to_batch)
from .text_encoder import TextEncoder

FORMAT = "aloe_policy.flow_matching"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
# Advantage indicator values (the rows of VelocityField.in_advantage)
ADVANTAGE_UNKNOWN, ADVANTAGE_NEGATIVE, ADVANTAGE_POSITIVE = 0, 1, 2


class CheckpointError(ValueError):
    """A checkpoint directory is missing, corrupt or inconsistent; the message says which part."""


# ---------------------------------------------------------------------------------------------
# Observation encoder (reused by the critic)
# ---------------------------------------------------------------------------------------------
class CameraEncoder(nn.Module):
    """float32 (B, 3, S, S) in [0, 1] -> (B, out_dim). Stride-2 convs, then a coarse spatial grid
    (average-pooled to pool x pool) so where things are in the image survives, and optionally
    ``keypoints`` spatial-softmax keypoints: for each of K learnt maps the softmax-weighted mean
    image position (x, y) in [-1, 1], which locates a small object to a fraction of a cell."""

    def __init__(self, channels: tuple[int, ...], pool_size: int, out_dim: int, keypoints: int = 0):
        super().__init__()
        layers, c_in = [], 3
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GroupNorm(math.gcd(8, c), c), nn.SiLU()]
            c_in = c
        self.conv = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.keypoints = SpatialSoftmax(c_in, keypoints) if keypoints > 0 else None
        self.proj = nn.Linear(c_in * pool_size * pool_size + 2 * keypoints, out_dim)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.conv(image * 2.0 - 1.0)
        parts = [self.pool(x).flatten(1)]
        if self.keypoints is not None:
            parts.append(self.keypoints(x))
        return self.proj(torch.cat(parts, dim=-1))


class SpatialSoftmax(nn.Module):
    """(B, C, h, w) feature map -> (B, 2K): for K maps (a 1x1 conv of the C channels) the expected
    (x, y) under a softmax over the h x w positions, with a learnt temperature."""

    def __init__(self, channels: int, keypoints: int):
        super().__init__()
        self.maps = nn.Conv2d(channels, keypoints, 1)
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        logits = self.maps(x).flatten(2) / self.log_temperature.exp()     # (B, K, h*w)
        attention = torch.softmax(logits, dim=-1)
        ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        ex = (attention * grid_x.reshape(1, 1, -1)).sum(-1)
        ey = (attention * grid_y.reshape(1, 1, -1)).sum(-1)
        return torch.stack([ex, ey], dim=-1).flatten(1)                     # (B, 2K)


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ augmentation: replicate-pad (B, C, S, S) by ``pad`` pixels, crop back at a random integer
    offset per image (the same image content moved by up to ``pad`` pixels each way)."""
    b, _, h, w = images.shape
    padded = nn.functional.pad(images, (pad, pad, pad, pad), mode="replicate")
    device = generator.device if generator is not None else images.device
    offsets = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator, device=device).to(images.device)
    rows = (offsets[:, 0, None] + torch.arange(h, device=images.device)[None])          # (B, h)
    cols = (offsets[:, 1, None] + torch.arange(w, device=images.device)[None])          # (B, w)
    batch = torch.arange(b, device=images.device)[:, None, None]
    # (B, h, w, C) gather of the crop, back to (B, C, h, w)
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


class ObservationEncoder(nn.Module):
    """Prepared batch (see processing.py) -> observation feature (B, feature_dim).

    One small CNN per camera, an MLP on normalised proprio, a linear projection of the frozen
    text embedding; concatenated and fused by an MLP (with dropout).
    """

    def __init__(self, config: PolicyConfig):
        super().__init__()
        self.config = config
        d = config.hidden_dim
        self.cameras = nn.ModuleDict({cam: CameraEncoder(config.cnn_channels, config.cnn_pool_size, d,
                                                         config.cnn_keypoints)
                                      for cam in config.camera_names})
        self.proprio = nn.Sequential(nn.Linear(config.proprio_dim, d), nn.SiLU(), nn.Linear(d, d))
        self.text = nn.Linear(config.text_embed_dim, d)
        n_parts = len(config.camera_names) + 2
        self.fuse = nn.Sequential(nn.Linear(n_parts * d, d), nn.SiLU(), nn.Dropout(config.dropout),
                                  nn.Linear(d, d))

    @property
    def feature_dim(self) -> int:
        return self.config.hidden_dim

    def forward(self, batch: Mapping) -> torch.Tensor:
        parts = [self.cameras[cam](batch["images"][cam]) for cam in self.config.camera_names]
        parts += [self.proprio(batch["proprio"]), self.text(batch["text"])]
        return self.fuse(torch.cat(parts, dim=-1))


# ---------------------------------------------------------------------------------------------
# Velocity field v_theta(x_t, t, o)
# ---------------------------------------------------------------------------------------------
def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """t (N,) in [0, 1] -> (N, dim) sinusoidal features at frequencies 1..1000 rad per unit t."""
    half = dim // 2
    freqs = torch.exp(torch.linspace(0.0, math.log(1000.0), half, device=t.device, dtype=t.dtype))
    args = t[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
    return nn.functional.pad(emb, (0, dim - 2 * half))


class ResidualBlock(nn.Module):
    """h + W2 silu(W1 LN(h) + cond): the condition (time + observation) enters every block."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim)
        self.fc2 = nn.Linear(dim, dim)

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return h + self.fc2(nn.functional.silu(self.fc1(self.norm(h)) + cond))


class VelocityField(nn.Module):
    """(x_t (N, H, A), t (N,), feature (N, F)) -> velocity (N, H, A), all in normalised action space."""

    def __init__(self, config: PolicyConfig, feature_dim: int):
        super().__init__()
        self.config = config
        d, flat = config.head_hidden_dim, config.chunk_horizon * config.action_dim
        self.in_x = nn.Linear(flat, d)
        self.in_t = nn.Sequential(nn.Linear(config.time_embed_dim, d), nn.SiLU(), nn.Linear(d, d))
        self.in_obs = nn.Linear(feature_dim, d)
        self.blocks = nn.ModuleList(ResidualBlock(d) for _ in range(config.head_layers))
        self.out = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, flat))
        if config.advantage_conditioning:  # zero at first: a policy given the indicator starts as it was
            self.in_advantage = nn.Embedding(3, d)
            nn.init.zeros_(self.in_advantage.weight)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, feature: torch.Tensor,
                advantage: torch.Tensor | None = None, obs_cond: torch.Tensor | None = None) -> torch.Tensor:
        """advantage: (N,) int64 indicator (ADVANTAGE_*), only for an advantage-conditioned field.
        obs_cond: ``in_obs(feature)``, computed once by a caller that integrates many steps at the same
        observations (sampling); the same numbers as computing it here every step."""
        if obs_cond is None:
            obs_cond = self.in_obs(feature)
        cond = self.in_t(time_embedding(t, self.config.time_embed_dim)) + obs_cond
        if advantage is not None:
            cond = cond + self.in_advantage(advantage)
        h = self.in_x(x_t.flatten(1)) + cond
        for block in self.blocks:
            h = block(h, cond)
        return self.out(h).view_as(x_t)


# ---------------------------------------------------------------------------------------------
# The policy
# ---------------------------------------------------------------------------------------------
class FlowMatchingPolicy(nn.Module):
    """Language-conditioned visuomotor policy producing H-step action chunks by flow matching.

    API (docs/interfaces.md): `sample`, `loss`, `fit_normalization`, `save_pretrained`,
    `from_pretrained`, `policy_id`, plus `predict_chunk` for one observation.
    """

    def __init__(self, config: PolicyConfig | None = None, text_encoder: TextEncoder | None = None):
        super().__init__()
        self.config = config if config is not None else PolicyConfig()
        self.encoder = ObservationEncoder(self.config)
        self.velocity = VelocityField(self.config, self.encoder.feature_dim)
        # Not nn.Modules: frozen / non-trainable state, saved in config.json instead of the weights.
        self.normalizer = Normalizer(self.config)
        self.text_encoder = text_encoder or TextEncoder(embed_dim=self.config.text_embed_dim)
        if self.text_encoder.embed_dim != self.config.text_embed_dim:
            raise ConfigError(f"text encoder gives {self.text_encoder.embed_dim}-d embeddings but "
                              f"config.text_embed_dim is {self.config.text_embed_dim}")
        self.processor = ObservationProcessor(self.config, self.normalizer, self.text_encoder)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # --- data ---------------------------------------------------------------------------------
    def fit_normalization(self, proprio, actions) -> None:
        """Set mean/std from the training data: proprio (N, P), actions (N, H, A) in action units."""
        self.normalizer.fit(proprio, actions)

    def prepare(self, obs: Mapping) -> dict:
        """Raw observation dict -> prepared batch on this policy's device (processing.py)."""
        return self.processor(obs, self.device)

    def _noise(self, shape, generator: torch.Generator | None, uniform: bool = False) -> torch.Tensor:
        # Drawn on the generator's device then moved, so a CPU generator gives the same numbers
        # whatever device the policy runs on.
        device = generator.device if generator is not None else self.device
        draw = torch.rand if uniform else torch.randn
        return draw(shape, generator=generator, device=device).to(self.device)

    # --- training -----------------------------------------------------------------------------
    def _advantage(self, advantage, n: int, default: int) -> torch.Tensor | None:
        """The indicator (n,) int64 for an advantage-conditioned policy (``default`` where None);
        None for a policy without it (which refuses one)."""
        if not self.config.advantage_conditioning:
            if advantage is not None:
                raise ValueError("this policy takes no advantage indicator (PolicyConfig.advantage_conditioning "
                                 "is false); make one with with_advantage_conditioning(policy)")
            return None
        if advantage is None:
            return torch.full((n,), default, dtype=torch.long, device=self.device)
        a = torch.as_tensor(advantage).to(device=self.device, dtype=torch.long)
        if tuple(a.shape) != (n,):
            raise ValueError(f"advantage indicator must be (B,) = ({n},), got {tuple(a.shape)}")
        if ((a < ADVANTAGE_UNKNOWN) | (a > ADVANTAGE_POSITIVE)).any():
            raise ValueError("advantage indicator values are ADVANTAGE_UNKNOWN (0), ADVANTAGE_NEGATIVE (1) or "
                             "ADVANTAGE_POSITIVE (2)")
        return a

    def loss(self, obs: Mapping, chunks, weights=None, *, generator: torch.Generator | None = None,
             advantage=None) -> torch.Tensor:
        """Per-sample weighted flow-matching loss, (B,) float32.

        chunks: (B, H, A) executed action chunks in action units; weights: (B,) >= 0 or None (all 1).
        A sample with weight 0 contributes exactly nothing (its loss term is multiplied by 0).
        advantage: (B,) ADVANTAGE_* indicator of each chunk (advantage-conditioned policies only;
        None = unknown).
        """
        batch = self.prepare(obs)
        n = batch["proprio"].shape[0]
        indicator = self._advantage(advantage, n, ADVANTAGE_UNKNOWN)
        if self.training and self.config.image_shift > 0:
            batch = {**batch, "images": {cam: random_shift(img, self.config.image_shift, generator)
                                         for cam, img in batch["images"].items()}}
        x1 = self.normalizer.normalize_actions(check_chunks(chunks, self.config, n, self.device))
        x0 = self._noise(x1.shape, generator)
        t = self._noise((n,), generator, uniform=True)
        tt = t[:, None, None]
        x_t = (1.0 - tt) * x0 + tt * x1
        v = self.velocity(x_t, t, self.encoder(batch), indicator)
        per_sample = ((v - (x1 - x0)) ** 2).mean(dim=(1, 2))
        if weights is None:
            return per_sample
        w = as_tensor(weights, "weights").to(device=self.device, dtype=torch.float32)
        if tuple(w.shape) != (n,):
            raise ValueError(f"weights must be (B,) = ({n},), got {tuple(w.shape)}")
        check_finite(w, "weights")
        if (w < 0).any():
            raise ValueError("weights must be >= 0 (advantage weights are exp(A/beta) clipped to [0, w_max])")
        return per_sample * w

    # --- inference ----------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, obs: Mapping, n: int = 1, generator: torch.Generator | None = None,
               advantage: int | None = None) -> torch.Tensor:
        """n action chunks per observation: float32 (B, n, H, A) in action units, within bounds.

        Always runs the network in eval mode (no dropout); the mode is restored afterwards. An
        advantage-conditioned policy samples conditioned on ``advantage`` (default
        ADVANTAGE_POSITIVE: what it is deployed with), guided by its ``advantage_guidance``.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        was_training = self.training
        self.eval()
        try:
            return self.sample_prepared(self.prepare(obs), n, generator, advantage)
        finally:
            self.train(was_training)

    @torch.no_grad()
    def sample_prepared(self, batch: Mapping, n: int = 1, generator: torch.Generator | None = None,
                        advantage: int | None = None) -> torch.Tensor:
        """`sample` on an already prepared batch (the observation is encoded once, repeated n times)."""
        c = self.config
        feature = self.encoder(batch)
        b = feature.shape[0]
        feature = feature.repeat_interleave(n, dim=0)                       # (B*n, F)
        x = self._noise((b * n, c.chunk_horizon, c.action_dim), generator)  # t = 0: noise
        given = None if advantage is None else torch.full((b * n,), int(advantage), dtype=torch.long)
        indicator = self._advantage(given, b * n, ADVANTAGE_POSITIVE)
        unknown = None if indicator is None else torch.full_like(indicator, ADVANTAGE_UNKNOWN)
        guidance = 0.0 if advantage == ADVANTAGE_UNKNOWN else c.advantage_guidance  # 0 without conditioning
        dt = 1.0 / c.flow_steps
        obs_cond = self.velocity.in_obs(feature)  # the same at every step
        for k in range(c.flow_steps):
            t = torch.full((b * n,), k * dt, device=x.device)
            v = self.velocity(x, t, feature, indicator, obs_cond=obs_cond)
            if guidance > 0:  # v_c + g (v_c - v_unknown)
                v = v + guidance * (v - self.velocity(x, t, feature, unknown, obs_cond=obs_cond))
            x = x + dt * v
        actions = self.normalizer.unnormalize_actions(x)
        low = torch.tensor(c.action_low, dtype=actions.dtype, device=actions.device)
        high = torch.tensor(c.action_high, dtype=actions.dtype, device=actions.device)
        return torch.maximum(torch.minimum(actions, high), low).view(b, n, c.chunk_horizon, c.action_dim)

    def predict_chunk(self, obs_single: Mapping, generator: torch.Generator | None = None) -> np.ndarray:
        """One observation (images (h, w, 3), proprio (P,), task str) -> float32 (H, A) numpy chunk."""
        batch = single_to_batch(obs_single)
        chunks = self.sample(batch, n=1, generator=generator)
        if chunks.shape[0] != 1:
            raise ValueError(f"predict_chunk takes one observation, got a batch of {chunks.shape[0]}")
        return chunks[0, 0].cpu().numpy()

    # --- identity and checkpoints -------------------------------------------------------------
    def _hashed_metadata(self) -> dict:
        return {"format_version": FORMAT_VERSION, "config": self.config.hashed_dict(),
                "normalization": self.normalizer.to_dict()}

    @property
    def policy_id(self) -> str:
        """16 hex chars: sha256 over the weights (names, dtypes, shapes, bytes) + canonical config JSON.

        Recomputed from the content on every access (a few ms): keep it after loading if it is read
        per published chunk.
        """
        return compute_policy_id(self.state_dict(), self._hashed_metadata())

    def save_pretrained(self, directory: str | os.PathLike) -> str:
        """Write ``model.safetensors`` + ``config.json`` into `directory` atomically; return policy_id.

        Files are written to a temporary sibling directory, fsynced, then renamed into place, so
        a crash leaves either the old checkpoint or the new one, never a mix or half a file (a crash
        between the two renames of an overwrite leaves the old one in ``.<name>.old-*``). An
        existing `directory` is only replaced if it holds nothing but a checkpoint's two files.
        """
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        if directory.exists() and not directory.is_dir():
            raise FileExistsError(f"{directory} exists and is not a directory")
        if directory.is_dir():
            # Replacing swaps the whole directory: never do that to a folder holding anything else.
            foreign = sorted(set(os.listdir(directory)) - {WEIGHTS_FILE, CONFIG_FILE})
            if foreign:
                raise FileExistsError(f"refusing to overwrite {directory}: it holds files that are not part of a "
                                      f"policy checkpoint ({foreign[:5]}); save into its own directory, "
                                      f"e.g. {directory / 'policy'}")
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        policy_id = compute_policy_id(state, self._hashed_metadata())
        meta = {"format": FORMAT, **self._hashed_metadata(), "policy_id": policy_id,
                "text_embeddings": self.text_encoder.cache_to_dict()}
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
        try:
            save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT, "policy_id": policy_id})
            (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=1) + "\n")
            for name in (WEIGHTS_FILE, CONFIG_FILE):
                fsync_path(tmp / name)
            install_dir(tmp, directory)  # swap: old -> aside, new -> place, drop old
            fsync_path(directory.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return policy_id

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device = "cpu",
                        text_encoder: TextEncoder | None = None) -> "FlowMatchingPolicy":
        """Load a checkpoint written by `save_pretrained`; raises CheckpointError saying what is wrong.

        Checks: both files, JSON, format version, config, every tensor present with the shape the
        config implies and finite, normalisation stats, text cache, and that the content still hashes
        to the recorded policy_id (files not edited or mixed from two saves).
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise CheckpointError(f"checkpoint directory {directory} does not exist")
        for name in (WEIGHTS_FILE, CONFIG_FILE):
            if not (directory / name).is_file():
                raise CheckpointError(f"checkpoint {directory} is missing {name}")
        try:
            meta = json.loads((directory / CONFIG_FILE).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{CONFIG_FILE} is not valid JSON: {exc}") from exc
        if not isinstance(meta, dict):
            raise CheckpointError(f"{CONFIG_FILE} must hold a JSON object, got {type(meta).__name__}")
        if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(f"{CONFIG_FILE}: format {meta.get('format')!r} version "
                                  f"{meta.get('format_version')!r} is not {FORMAT!r} version {FORMAT_VERSION}")
        try:
            config = PolicyConfig.from_dict(meta.get("config"))
        except ConfigError as exc:
            raise CheckpointError(f"{CONFIG_FILE}: invalid config: {exc}") from exc

        try:
            from safetensors.torch import load_file

            state = load_file(str(directory / WEIGHTS_FILE))
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise CheckpointError(f"{WEIGHTS_FILE} cannot be read (truncated or corrupt?): {exc}") from exc

        policy = cls(config, text_encoder=text_encoder or TextEncoder(embed_dim=config.text_embed_dim))
        expected = policy.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise CheckpointError(f"{WEIGHTS_FILE} does not match the config: missing tensors {missing[:5]}, "
                                  f"unexpected tensors {unexpected[:5]}")
        for key, ref in expected.items():
            t = state[key]
            if t.shape != ref.shape or t.dtype != ref.dtype:
                raise CheckpointError(
                    f"tensor {key!r} is {tuple(t.shape)} {t.dtype} in {WEIGHTS_FILE} but the config "
                    f"(action_dim={config.action_dim}, chunk_horizon={config.chunk_horizon}, "
                    f"proprio_dim={config.proprio_dim}, hidden_dim={config.hidden_dim}) needs "
                    f"{tuple(ref.shape)} {ref.dtype}")
            if t.is_floating_point() and not torch.isfinite(t).all():
                raise CheckpointError(f"tensor {key!r} in {WEIGHTS_FILE} contains NaN or inf")
        policy.load_state_dict(state, strict=True)
        try:
            policy.normalizer.load_dict(meta.get("normalization"))
            policy.text_encoder.load_cache(meta.get("text_embeddings", {}))
        except ValueError as exc:
            raise CheckpointError(f"{CONFIG_FILE}: {exc}") from exc
        actual = policy.policy_id
        if meta.get("policy_id") != actual:
            raise CheckpointError(f"checkpoint content hashes to policy_id {actual} but {CONFIG_FILE} records "
                                  f"{meta.get('policy_id')!r}: the files were edited or come from two different "
                                  "saves; re-save it with save_pretrained")
        return policy.to(device).eval()


def with_advantage_conditioning(policy: FlowMatchingPolicy, guidance: float = 0.0) -> FlowMatchingPolicy:
    """A copy of ``policy`` whose velocity field takes the advantage indicator (config
    ``advantage_conditioning`` on, ``advantage_guidance`` = guidance). Its weights are the policy's;
    a new indicator embedding starts at zero, so before training it samples exactly as ``policy``.
    A policy that is conditioned already keeps its embedding (only the guidance is set)."""
    config = policy.config.replace(advantage_conditioning=True, advantage_guidance=float(guidance))
    out = FlowMatchingPolicy(config, text_encoder=policy.text_encoder).to(policy.device)
    missing, unexpected = out.load_state_dict(policy.state_dict(), strict=False)
    if unexpected or any(not k.startswith("velocity.in_advantage.") for k in missing):
        raise ValueError(f"cannot add the advantage indicator: missing {missing}, unexpected {unexpected}")
    out.normalizer.load_dict(policy.normalizer.to_dict())
    return out.train(policy.training)


def compute_policy_id(state_dict: Mapping[str, torch.Tensor], hashed_metadata: dict) -> str:
    """First 16 hex chars of sha256(weights in key order + canonical JSON of config/normalisation)."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(json.dumps(hashed_metadata, sort_keys=True, separators=(",", ":")).encode())
    return h.hexdigest()[:16]


def load_checkpoint(directory: str | os.PathLike, device: str | torch.device = "cpu") -> FlowMatchingPolicy:
    """`from_pretrained` plus a test forward pass; raises CheckpointError saying what is wrong.

    The forward pass: sample() on a dummy observation (black images, mean proprio, the first
    cached instruction) must give finite (1, 1, H, A) chunks. It never loads the sentence
    encoder: with no cached instruction, a zero text embedding is used. What policy_node loads:
    one read and one hash of the files per hot reload.
    """
    policy = FlowMatchingPolicy.from_pretrained(directory, device=device)
    c = policy.config
    known = policy.text_encoder.known_instructions
    generator = torch.Generator().manual_seed(0)
    try:
        if known:  # the whole path: uint8 images, proprio normalisation, cached text embedding
            obs = {"images": {cam: np.zeros((1, c.image_size, c.image_size, 3), np.uint8) for cam in c.camera_names},
                   "proprio": policy.normalizer.proprio_mean[None], "task": known[:1]}
            out = policy.sample(obs, n=1, generator=generator)
        else:  # no instruction known: zero text embedding rather than loading MiniLM
            batch = {"images": {cam: torch.zeros(1, 3, c.image_size, c.image_size, device=policy.device)
                                for cam in c.camera_names},
                     "proprio": torch.zeros(1, c.proprio_dim, device=policy.device),
                     "text": torch.zeros(1, c.text_embed_dim, device=policy.device)}
            out = policy.sample_prepared(batch, n=1, generator=generator)
    except Exception as exc:  # noqa: BLE001 - whatever the network raises, the checkpoint is unusable
        raise CheckpointError(f"test forward pass failed: {type(exc).__name__}: {exc}") from exc
    shape = (1, 1, c.chunk_horizon, c.action_dim)
    if tuple(out.shape) != shape:
        raise CheckpointError(f"test forward pass gave shape {tuple(out.shape)}, expected {shape}")
    if not torch.isfinite(out).all():
        raise CheckpointError("test forward pass produced NaN or inf actions")
    return policy


def validate_checkpoint(directory: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[bool, str]:
    """`load_checkpoint` that never raises: (True, summary) or (False, what is wrong)."""
    try:
        policy = load_checkpoint(directory, device)
    except CheckpointError as exc:
        return False, f"checkpoint {directory} rejected: {exc}"
    except Exception as exc:  # noqa: BLE001 - the contract is: never raise, say what failed
        return False, f"checkpoint {directory} rejected: {type(exc).__name__}: {exc}"
    c = policy.config
    return True, (f"checkpoint {directory} OK: policy_id {policy.policy_id}, H={c.chunk_horizon}, "
                  f"A={c.action_dim}, cameras {list(c.camera_names)}, "
                  f"{len(policy.text_encoder.known_instructions)} cached instructions")
