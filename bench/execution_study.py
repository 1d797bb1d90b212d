#!/usr/bin/env python3
"""Execution study: how chunk re-planning, inference latency and blending change a policy's success.

The policy_node + executor_node path without ROS, in one process, tick by tick on ``PickCubeSim``:
a chunk is inferred from the observation of tick t every ``replan`` ticks, becomes usable ``lag``
ticks later (the executor aligns it by its observation stamp, so it starts at index ``lag``), and the
executor's own ``aloe_policy.chunking.ChunkBlender`` (newest / linear / temporal_ensemble) picks the
action of every tick. Every setting runs the same cube positions (seeds) and the same policy noise
stream, so settings differ only in how the chunks are executed. Success = the sim's success signal
within ``--max-steps`` ticks.

The main job's lock-step sim waits for no one, so every chunk lands one tick after its observation
(lag 1); which re-planning and blending it uses is set in launch/config/sim.yaml from this study.

Example (the table of the issue-6 note; any policy checkpoint of an ``aloe-loop`` run works):
    python bench/execution_study.py --checkpoint runs/<run>/checkpoints/iter_00 --episodes 20 \\
        --out bench/results/execution_study.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

SETTINGS = ("2:0:newest", "2:0:linear", "3:0:linear", "1:1:newest", "3:1:newest", "3:1:linear")
TASK = "pick up the cube"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--checkpoint", required=True, help="policy checkpoint directory (save_pretrained)")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS),
                   help="REPLAN:LAG:BLENDING (ticks between inferences, ticks of latency, newest|linear|"
                        f"temporal_ensemble); default {' '.join(SETTINGS)}")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed-base", type=int, default=500, help="cube positions: seeds seed_base .. +episodes-1")
    p.add_argument("--max-steps", type=int, default=100)
    p.add_argument("--blend-steps", type=int, default=3, help="linear cross-fade length (executor blend_steps)")
    p.add_argument("--out", type=Path, help="JSON results")
    return p.parse_args(argv)


def parse_setting(text: str) -> tuple[int, int, str]:
    try:
        replan, lag, mode = text.split(":")
        replan, lag = int(replan), int(lag)
    except ValueError:
        raise ValueError(f"setting {text!r} is not REPLAN:LAG:BLENDING, e.g. 2:0:newest") from None
    if replan < 1 or lag < 0:
        raise ValueError(f"setting {text!r}: REPLAN must be >= 1 and LAG >= 0")
    return replan, lag, mode


def run_episode(sim, policy, seed: int, replan: int, lag: int, mode: str, blend_steps: int, generator) -> bool:
    """One episode executed as policy_node + executor would; True on success."""
    from aloe_policy.chunking import BlendMode, Chunk, ChunkBlender

    period = 100_000_000  # ns per tick; stamps are tick * period
    obs = sim.reset(seed)
    blender = ChunkBlender(BlendMode.parse(mode), blend_steps)
    pending: list[tuple[int, Chunk]] = []  # (tick it becomes usable, chunk)
    next_inference, chunk_id, success = 0, 0, False
    while not sim.done:
        t = obs.step
        if t >= next_inference:
            actions = policy.predict_chunk({"images": obs.images, "proprio": obs.proprio(), "task": TASK},
                                           generator=generator)
            chunk_id += 1
            pending.append((t + lag, Chunk(chunk_id, policy.policy_id, t * period, period,
                                           np.asarray(actions, np.float64))))
            next_inference = t + replan
        while pending and pending[0][0] <= t:
            blender.add(pending.pop(0)[1])
        blended = blender.action_at(t * period)
        action = np.zeros(7) if blended is None else np.clip(blended.action, -1.0, 1.0)  # no chunk yet: hold
        obs, _, _, _, info = sim.step(action)
        success = success or bool(info["succeed"])
    return success


def main(argv=None) -> int:
    args = parse_args(argv)
    settings = [parse_setting(s) for s in args.settings]
    import torch

    from aloe_policy.model import FlowMatchingPolicy
    from aloe_sim.env import PickCubeSim

    torch.set_num_threads(1)
    policy = FlowMatchingPolicy.from_pretrained(args.checkpoint)
    sim = PickCubeSim(cameras=tuple(policy.config.camera_names), image_size=policy.config.image_size,
                      max_steps=args.max_steps)
    seeds = range(args.seed_base, args.seed_base + args.episodes)
    results = []
    for (replan, lag, mode), text in zip(settings, args.settings):
        start = time.perf_counter()
        generator = torch.Generator().manual_seed(0)  # the same noise stream for every setting
        outcomes = [run_episode(sim, policy, s, replan, lag, mode, args.blend_steps, generator) for s in seeds]
        row = {"setting": text, "replan_every": replan, "lag_ticks": lag, "blending": mode,
               "episodes": len(outcomes), "success": float(np.mean(outcomes)), "outcomes": outcomes,
               "seconds": time.perf_counter() - start}
        results.append(row)
        print(f"replan every {replan} tick(s), lag {lag}, {mode:17s}: success {row['success']:.2f} "
              f"({sum(outcomes)}/{len(outcomes)}, {row['seconds']:.0f} s)", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"checkpoint": str(args.checkpoint), "policy_id": policy.policy_id,
                                        "seeds": list(seeds), "results": results}, indent=1))
    print("| re-plan every (ticks) | lag (ticks) | blending | success |\n|---|---|---|---|")
    for r in results:
        print(f"| {r['replan_every']} | {r['lag_ticks']} | {r['blending']} | {r['success']:.2f} "
              f"({sum(r['outcomes'])}/{r['episodes']}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
