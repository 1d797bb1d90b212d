#!/usr/bin/env python3
"""Training speed on a CUDA device against the CPU, measured in the same run.

One ALOE iteration (``aloe_critic.train.run_iteration``: pi's sample bank, the critic ensemble's
chunked-TD fit, V and advantages, advantage-weighted flow matching) at the main job's network and
batch sizes (``aloe_bringup.loop``: LOOP_POLICY_CONFIG, loop_train_config) on synthetic episodes
(random 64x64 images and proprio: speed does not depend on what the pixels show), once per device.
Fewer gradient steps than the main job's 1500 / 1200 (``--critic-steps`` / ``--policy-steps``); a
short warm-up run per device first (CUDA context, kernels' first launch).

    python bench/bench_training_device.py                       # cpu, and cuda where torch sees one
    python bench/bench_training_device.py --out bench/results/training_device.json   # write the record

Prints seconds per device and the ratio to the CPU; writes a file only with ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch


def synthetic_episodes(n: int, ticks: int, image_size: int, proprio_dim: int, action_dim: int, seed: int):
    """``n`` episodes of ``ticks`` ticks; every third a failure; operator ticks in the middle of
    every second one (both groups of the data the critic and the weights treat differently)."""
    from aloe_data.ingestion import Episode

    rng = np.random.default_rng(seed)
    episodes = []
    for i in range(n):
        sources = np.zeros(ticks, np.uint8)
        if i % 2:
            sources[ticks // 3: ticks // 2] = 1
        success = i % 3 != 0
        rewards = np.zeros(ticks, np.float32)
        rewards[-1] = float(success)
        episodes.append(Episode(
            images={"front": rng.integers(0, 256, (ticks, image_size, image_size, 3), dtype=np.uint8)},
            proprio=rng.standard_normal((ticks, proprio_dim)).astype(np.float32),
            actions=(0.02 * rng.standard_normal((ticks, action_dim))).astype(np.float32),
            sources=sources, rewards=rewards,
            stamps=(np.arange(ticks, dtype=np.int64) * 100_000_000),
            chunk_ids=np.arange(ticks, dtype=np.uint64) // 10, policy_index=np.where(sources == 0, 0, -1).astype(np.int32),
            policy_ids=["0123456789abcdef"], task="pick the cube", outcome="SUCCESS" if success else "FAILURE",
            bag=f"synthetic/{i:03d}", episode_id=f"ep{i}"))
    return episodes


def one_iteration(device: str, dataset, policy, config) -> float:
    from aloe_critic.train import run_iteration

    config = copy.deepcopy(config)
    config.device = device
    policy = copy.deepcopy(policy).to(device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    run_iteration(config, dataset, policy)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda where available")
    p.add_argument("--episodes", type=int, default=60, help="synthetic episodes (the main job's third iteration "
                                                            "holds about this many)")
    p.add_argument("--ticks", type=int, default=60, help="ticks per episode")
    p.add_argument("--critic-steps", type=int, default=300)
    p.add_argument("--policy-steps", type=int, default=300)
    p.add_argument("--threads", type=int, default=0, help="CPU torch threads (0: torch's default)")
    p.add_argument("--out", default="", help="JSON record to write (e.g. bench/results/training_device.json)")
    a = p.parse_args(argv)
    from aloe_bringup.loop import LOOP_POLICY_CONFIG, loop_train_config
    from aloe_critic.dataset import TransitionDataset
    from aloe_policy.testing import tiny_policy

    if a.threads:
        torch.set_num_threads(a.threads)
    devices = a.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    config = loop_train_config()
    config.method, config.progress = "aloe", False
    config.critic.critic_steps, config.improvement.policy_steps = a.critic_steps, a.policy_steps
    policy = tiny_policy({**LOOP_POLICY_CONFIG, "image_size": 64}, seed=0)  # hashed text embedding: no MiniLM
    c = policy.config
    dataset = TransitionDataset(synthetic_episodes(a.episodes, a.ticks, 64, c.proprio_dim, c.action_dim, 0),
                                c.chunk_horizon, config.gamma)
    policy.fit_normalization(*dataset.behaviour_arrays())
    policy.text_encoder.encode(["pick the cube"])
    warm = copy.deepcopy(config)
    warm.critic.critic_steps = warm.improvement.policy_steps = 5
    rows = []
    for device in devices:
        one_iteration(device, dataset, policy, warm)
        seconds = one_iteration(device, dataset, policy, config)
        rows.append({"device": device, "seconds": seconds,
                     "name": torch.cuda.get_device_name(device) if device.startswith("cuda") else platform.processor()
                     or platform.machine(), "threads": torch.get_num_threads() if device == "cpu" else None})
        print(f"{device}: {seconds:.1f} s for one iteration ({a.critic_steps} critic + {a.policy_steps} policy steps, "
              f"{len(dataset)} chunks)", flush=True)
    base = next((r["seconds"] for r in rows if r["device"] == "cpu"), None)
    for r in rows:
        r["speedup_vs_cpu"] = base / r["seconds"] if base else None
        if base and r["device"] != "cpu":
            print(f"{r['device']} ({r['name']}): {r['speedup_vs_cpu']:.1f}x the CPU ({rows[0]['threads']} threads)")
    if a.out:
        record = {"command": " ".join(["python bench/bench_training_device.py", *(sys.argv[1:] if argv is None else argv)]), "chunks": len(dataset),
                  "critic_steps": a.critic_steps, "policy_steps": a.policy_steps, "cpu_count": os.cpu_count(),
                  "torch": torch.__version__, "rows": rows}
        Path(a.out).write_text(json.dumps(record, indent=1))
        print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
