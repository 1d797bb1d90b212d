#!/usr/bin/env python3
"""Latency of value-guided selection (policy_node value_guided_samples = n: sample n chunks, score
them with the checkpoint's critic, execute the best) against one plain sample, in the same run
(issue 14). The main job's network sizes (64x64 image, keypoints), a critic of K = 5 heads.

    python bench/bench_value_guided.py [--repeats 100]

Writes nothing tracked.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=100)
    p.add_argument("--samples", type=int, nargs="+", default=[4, 8, 16])
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    from aloe_critic.critic import CriticConfig, critic_for_policy, export_chunk_scorer
    from aloe_policy import testing
    from aloe_policy.selection import ValueGuidedSelector
    from aloe_bringup.loop import LOOP_POLICY_CONFIG

    config = {**{k: tuple(v) if isinstance(v, list) else v for k, v in LOOP_POLICY_CONFIG.items()},
              "camera_names": ("workspace",), "text_embed_dim": 32}
    rng = np.random.default_rng(0)
    obs = {"images": {"workspace": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)},
           "proprio": np.zeros(18, np.float32), "task": "pick up the cube"}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "ckpt"
        testing.save_tiny_checkpoint(ckpt, 0, config, obs["task"])
        from aloe_policy.model import FlowMatchingPolicy
        policy = FlowMatchingPolicy.from_pretrained(ckpt).eval()
        critic = critic_for_policy(policy, CriticConfig(ensemble_size=5, freeze_encoder=True))
        batch = {"images": {"workspace": torch.from_numpy(np.stack([obs["images"]["workspace"]] * 2))},
                 "proprio": torch.zeros(2, 18), "task": [obs["task"]] * 2}
        export_chunk_scorer(critic, policy, ckpt / "chunk_scorer.pt", batch)
        selectors = {n: ValueGuidedSelector(policy, ckpt, n) for n in a.samples}
        gen = torch.Generator().manual_seed(0)
        times = {"plain": []} | {n: [] for n in a.samples}
        for _ in range(5):
            policy.predict_chunk(obs, gen)
        for _ in range(a.repeats):  # interleaved: every variant sees the same load
            t0 = time.perf_counter()
            policy.predict_chunk(obs, gen)
            times["plain"].append(time.perf_counter() - t0)
            for n, sel in selectors.items():
                t0 = time.perf_counter()
                sel.predict_chunk(obs, gen)
                times[n].append(time.perf_counter() - t0)
    base = np.median(times["plain"])
    print(f"median of {a.repeats} inferences, 1 torch thread\n")
    print("| inference | median (ms) | p99 (ms) | ratio to one sample |\n|---|---|---|---|")
    for key, t in times.items():
        label = "one sample (predict_chunk)" if key == "plain" else f"best of {key} under the critic"
        print(f"| {label} | {np.median(t) * 1e3:.2f} | {np.percentile(t, 99) * 1e3:.2f} | {np.median(t) / base:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
