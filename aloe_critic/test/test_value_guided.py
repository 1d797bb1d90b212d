"""Value-guided selection: aloe-train writes the critic as a TorchScript chunk scorer into the
checkpoint; aloe_policy's selector (no aloe_critic import) executes the sample the critic ranks best."""

import numpy as np
import torch

from aloe_critic.evaluate import load_critic
from aloe_policy.model import FlowMatchingPolicy
from aloe_policy.selection import CHUNK_SCORER, ValueGuidedSelector


def test_selector_executes_the_best_sample_under_the_checkpoints_critic(aloe_checkpoint):
    root, ckpt = aloe_checkpoint
    assert (ckpt / CHUNK_SCORER).is_file()
    policy = FlowMatchingPolicy.from_pretrained(ckpt)
    selector = ValueGuidedSelector(policy, ckpt, 8)
    rng = np.random.default_rng(0)
    obs = {"images": {c: rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for c in policy.config.camera_names},
           "proprio": rng.standard_normal(policy.config.proprio_dim).astype(np.float32), "task": "pick the cube"}
    chosen = selector.predict_chunk(obs, torch.Generator().manual_seed(5))
    # the same 8 samples, scored by the Python critic (the one the scorer was traced from)
    policy.eval()
    from aloe_policy.model.processing import single_to_batch
    prepared = policy.prepare(single_to_batch(obs))
    samples = policy.sample_prepared(prepared, 8, torch.Generator().manual_seed(5))
    critic, _, _ = load_critic(ckpt, policy_path=ckpt)
    with torch.no_grad():
        feats = critic.encoder(prepared)
        scores = critic.aggregate(critic.q_values(None, samples, features=feats))[0].numpy()
    np.testing.assert_allclose(selector.last_scores, scores, atol=1e-5)
    np.testing.assert_allclose(chosen, samples[0, int(scores.argmax())].numpy(), atol=1e-6)
    assert len(set(np.round(scores, 6))) > 1, "the samples differ in value"
    assert selector.policy_id == policy.policy_id, "the chunks executed are the sampled policy's"
