"""Value-guided chunk selection at deployment (ROS-free): sample n chunks of the policy for the
current observation, score them with the critic that travels in the checkpoint
(``chunk_scorer.pt``, TorchScript written by aloe-train; this package never imports aloe_critic),
execute the one with the highest pessimistic Q.

    A* = argmax_{j <= n} Agg_k Q_k(o, A_j),   A_j ~ pi(.|o)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .model.processing import single_to_batch

CHUNK_SCORER = "chunk_scorer.pt"  # written by aloe_critic.critic.export_chunk_scorer


class ValueGuidedSelector:
    """``predict_chunk(obs_single, generator) -> (H, A)``: the best of ``n`` samples under the critic."""

    def __init__(self, model, checkpoint: str | Path, n: int):
        path = Path(checkpoint) / CHUNK_SCORER
        if not path.is_file():
            raise FileNotFoundError(f"{checkpoint} has no {CHUNK_SCORER} (a critic for value-guided selection; "
                                    "aloe-train --method aloe|td1|progress writes one); set value_guided_samples 0")
        if n < 2:
            raise ValueError(f"value-guided selection needs n >= 2 samples, got {n}")
        self.model, self.n = model, int(n)
        self.scorer = torch.jit.load(str(path), map_location="cpu").eval()
        self.cameras = list(model.config.camera_names)
        self.last_scores: np.ndarray | None = None

    @property
    def policy_id(self) -> str:
        """The sampled policy's id: the chunks executed are that policy's (the critic only picks)."""
        return self.model.policy_id

    @torch.no_grad()
    def predict_chunk(self, obs_single, generator: torch.Generator | None = None) -> np.ndarray:
        was_training = self.model.training
        self.model.eval()
        try:
            prepared = self.model.prepare(single_to_batch(obs_single))
            chunks = self.model.sample_prepared(prepared, self.n, generator)                   # (1, n, H, A)
            scores = self.scorer([prepared["images"][c].cpu() for c in self.cameras], prepared["proprio"].cpu(),
                                 prepared["text"].cpu(), chunks.cpu())                          # (1, n)
        finally:
            self.model.train(was_training)
        self.last_scores = scores[0].numpy()
        return chunks[0, int(scores[0].argmax())].cpu().numpy().astype(np.float32)
