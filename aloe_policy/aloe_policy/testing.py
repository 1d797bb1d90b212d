"""Deterministic stand-ins for tests and benchmarks: a text embedding that needs no model, and
tiny policy checkpoints that save and load in milliseconds.

Not for deployment: the embedding carries no meaning beyond "same text, same vector".
"""

from __future__ import annotations

import os
import re
import subprocess
import time

import hashlib
from pathlib import Path

import numpy as np
import torch

from .model import FlowMatchingPolicy, PolicyConfig, TextEncoder


def hashed_text_embedding(texts, dim: int = 32) -> np.ndarray:
    """(len(texts), dim) float32 unit vectors, one per text, seeded by a hash of the text: the
    same text gives the same vector in every process (a stand-in for MiniLM's encoder)."""
    out = np.empty((len(texts), dim), np.float32)
    for i, text in enumerate(texts):
        seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
        v = np.random.default_rng(seed).standard_normal(dim)
        out[i] = v / np.linalg.norm(v)
    return out


def tiny_policy(config: dict, seed: int = 0) -> FlowMatchingPolicy:
    """A freshly initialised policy (``torch.manual_seed(seed)``) with the hashed text embedding."""
    torch.manual_seed(seed)
    config = PolicyConfig(**config)
    return FlowMatchingPolicy(config, text_encoder=TextEncoder(
        embed_dim=config.text_embed_dim, encode_fn=lambda texts: hashed_text_embedding(texts, config.text_embed_dim)))


def save_tiny_checkpoint(directory: str | Path, seed: int, config: dict, task: str,
                         action_spread: float = 0.1) -> str:
    """Save a tiny untrained policy whose normalisation maps its outputs to about
    +-``action_spread`` and whose text cache holds ``task`` (so loading it never needs the text
    model); returns its policy_id."""
    policy = tiny_policy(config, seed)
    rng = np.random.default_rng(seed)
    proprio_dim, horizon, action_dim = policy.config.proprio_dim, policy.config.chunk_horizon, policy.config.action_dim
    policy.fit_normalization(rng.standard_normal((20, proprio_dim)),
                             rng.uniform(-action_spread, action_spread, (20, horizon, action_dim)))
    policy.text_encoder.encode([task])
    return policy.save_pretrained(directory)


def start_server(checkpoint, port: int = 0, preexec_fn=None):
    """``aloe-serve-policy`` serving ``checkpoint`` on 127.0.0.1 in its own process (port 0: any
    free one) -> (process, port), once it says it is serving. The caller kills the process."""
    proc = subprocess.Popen(["aloe-serve-policy", "--checkpoint", checkpoint, "--port", str(port), "--host",
                             "127.0.0.1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"), preexec_fn=preexec_fn)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        m = re.search(r"serving \w+ on ws://[\d.]+:(\d+)", line or "")
        if m:
            return proc, int(m.group(1))
        if proc.poll() is not None:
            raise RuntimeError(f"aloe-serve-policy exited: {proc.stdout.read()}")
    proc.kill()
    raise RuntimeError("aloe-serve-policy did not start in 60 s")
