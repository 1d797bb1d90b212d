#!/usr/bin/env python3
"""Ingestion and training throughput: bags -> training batches, critic and policy updates per second.

1. Bags in the suite's recorder layout (aloe_teleop.recorder's McapBagWriter, through
   ``critic_test_data.write_episode_bag(writer="recorder")``): one camera rgb8 at
   ``--image-size`` (two frames per tick), joint_states, EE pose, ExecutedAction, episode events;
   episodes mix POLICY and HUMAN ticks, SUCCESS and FAILURE.
2. Transitions/s from bags to training batches (every transition once, in batches of
   ``--batch-size``, observations o_t and o_{t+H} read), interleaved rounds, median:
     * naive: every round re-reads every bag with the rosbags reader, deserializes every
       message and builds the same per-tick arrays (``decode_bag``), then the batches;
     * cached, cold: first ingestion (decode once + write the columnar cache) then the batches;
     * cached, warm: ``ingest_bags`` served from the memory-mapped cache (bag hash memo), then
       the batches. The arrays are checked equal to the naive ones. Ratio warm / naive (target >= 10).
3. Updates/s of the critic (``fit_critic``, ALOE target) and of the policy (``improve_policy``,
   advantage-weighted) with the default TrainConfig networks and batch sizes on these
   observations, with ``batch_blocks`` 8 (the default: torchrun with 1, 2, 4 or 8 ranks is exact),
   4 and 1 (one forward per batch), and the frozen-encoder critic.

Usage: ``python bench/bench_ingestion.py`` (source scripts/env.sh first); ``--help`` for sizes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=50, help="episodes (bags) to generate (default 50)")
    p.add_argument("--ticks", type=int, default=100, help="control ticks per episode (default 100)")
    p.add_argument("--image-size", type=int, default=64, help="camera image side in pixels (default 64)")
    p.add_argument("--batch-size", type=int, default=256, help="transitions per training batch (default 256)")
    p.add_argument("--chunk-horizon", type=int, default=10, help="H (default 10)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved naive / warm rounds (default 3)")
    p.add_argument("--train-steps", type=int, default=10, help="timed critic / policy steps per variant (default 10)")
    p.add_argument("--train-episodes", type=int, default=5, help="episodes the update benchmark uses (default 5)")
    p.add_argument("--torch-threads", type=int, default=1, help="torch CPU threads (default 1: shared machine)")
    p.add_argument("--skip-training", action="store_true", help="ingestion only")
    p.add_argument("--bags-dir", default=None, help="reuse / keep generated bags here (default: a temp dir, deleted)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    return p.parse_args(argv)


def generate_bags(directory: Path, episodes: int, ticks: int, image_size: int) -> list[Path]:
    sys.path.insert(0, str(ROOT / "aloe_critic" / "test"))
    from critic_test_data import write_episode_bag

    rng = np.random.default_rng(0)
    bags = []
    for i in range(episodes):
        path = directory / f"episode_{i:04d}"
        if not (path / "metadata.yaml").exists():
            takeover = rng.integers(0, ticks)
            sources = [1 if takeover <= k < takeover + ticks // 5 else 0 for k in range(ticks)]
            write_episode_bag(path, num_ticks=ticks, sources=sources, image_size=image_size, writer="recorder",
                              outcome="SUCCESS" if i % 3 else "FAILURE", task="pick up the cube")
        bags.append(path)
    return bags


def read_all_batches(dataset, batch_size: int) -> int:
    """Every transition once as a training batch (obs and next obs); returns the transitions read."""
    n = 0
    for batch in dataset.iter_batches(batch_size):
        n += len(batch.index)
        assert batch.obs["images"] and batch.next_obs["proprio"].shape[0] == len(batch.index)
    return n


def naive_round(bags, config, H: int, gamma: float, batch_size: int):
    from aloe_critic.dataset import TransitionDataset
    from aloe_data.ingestion import Episode, decode_bag

    t0 = time.perf_counter()
    episodes = []
    for bag in bags:
        columns, meta = decode_bag(bag, config)  # rosbags reader, every message deserialized
        episodes.append(Episode(images={c: columns[f"image_{c}"] for c in meta["cameras"]},
                                **{k: columns[k] for k in ("proprio", "actions", "sources", "rewards", "stamps",
                                                           "chunk_ids", "policy_index")},
                                policy_ids=meta["policy_ids"], task=meta["task"], outcome=meta["outcome"],
                                bag=str(bag), episode_id=meta["episode_id"]))
    dataset = TransitionDataset(episodes, H, gamma)
    n = read_all_batches(dataset, batch_size)
    return n, time.perf_counter() - t0, dataset


def cached_round(bags, config, H: int, gamma: float, batch_size: int):
    from aloe_critic.dataset import TransitionDataset
    from aloe_data.ingestion import ingest_bags

    t0 = time.perf_counter()
    report = ingest_bags(bags, config)
    dataset = TransitionDataset(report.episodes, H, gamma)
    n = read_all_batches(dataset, batch_size)
    return n, time.perf_counter() - t0, dataset, report


def bench_ingestion(args, bags, cache_dir: Path) -> dict:
    from aloe_data.ingestion import IngestionConfig

    config = IngestionConfig(cache_dir=str(cache_dir), image_size=args.image_size)
    H, gamma = args.chunk_horizon, 0.99
    n, cold_s, _, report = cached_round(bags, config, H, gamma, args.batch_size)
    assert len(report.decoded) == len(bags) and not report.skipped, report.skipped
    naive, warm = [], []
    for _ in range(args.rounds):  # interleaved: machine load hits both alike
        n_naive, s, naive_ds = naive_round(bags, config, H, gamma, args.batch_size)
        naive.append(s)
        n_warm, s, warm_ds, report = cached_round(bags, config, H, gamma, args.batch_size)
        warm.append(s)
        assert len(report.cached) == len(bags) and n_naive == n_warm == n
    for name in ("chunks", "returns", "done", "proprio"):  # the same arrays both ways
        assert np.array_equal(getattr(naive_ds, name), getattr(warm_ds, name)), name
    cam = warm_ds.cameras[0]
    assert all(np.array_equal(np.asarray(a.images[cam]), b.images[cam])
               for a, b in zip(warm_ds.episodes, naive_ds.episodes))
    naive_s, warm_s = statistics.median(naive), statistics.median(warm)
    size = sum(f.stat().st_size for b in bags for f in b.glob("*.mcap"))
    return {"transitions": n, "bags": len(bags), "bag_mb": round(size / 1e6, 1),
            "naive_s": [round(x, 3) for x in naive], "warm_s": [round(x, 3) for x in warm], "cold_s": round(cold_s, 3),
            "naive_transitions_per_s": round(n / naive_s, 1), "cold_transitions_per_s": round(n / cold_s, 1),
            "warm_transitions_per_s": round(n / warm_s, 1), "warm_over_naive": round(naive_s / warm_s, 1)}


def bench_training(args, bags, cache_dir: Path) -> dict:
    import torch

    from aloe_critic.critic import CriticConfig, PolicySampleBank, critic_for_policy
    from aloe_critic.dataset import TransitionDataset
    from aloe_data.ingestion import IngestionConfig, ingest_bags
    from aloe_critic.improvement import ImprovementConfig, improve_policy
    from aloe_critic.values import fit_critic
    from aloe_policy.model import FlowMatchingPolicy, PolicyConfig, TextEncoder

    torch.set_num_threads(args.torch_threads)
    config = IngestionConfig(cache_dir=str(cache_dir), image_size=args.image_size)
    report = ingest_bags(bags[:args.train_episodes], config)
    dataset = TransitionDataset(report.episodes, args.chunk_horizon, 0.99)

    def fake_text(texts):  # MiniLM-sized embedding without downloading MiniLM; cost is the same per batch
        return np.ones((len(texts), 384), np.float32) / np.sqrt(384)

    torch.manual_seed(0)
    pconf = PolicyConfig(image_size=args.image_size, chunk_horizon=args.chunk_horizon)
    policy = FlowMatchingPolicy(pconf, text_encoder=TextEncoder(embed_dim=384, encode_fn=fake_text))
    policy.fit_normalization(*dataset.behaviour_arrays())
    cconf, iconf = CriticConfig(), ImprovementConfig()
    t0 = time.perf_counter()
    bank = PolicySampleBank(policy, dataset, cconf.num_policy_samples, batch_size=256, seed=0)
    bank_s = time.perf_counter() - t0
    adv = np.random.default_rng(0).standard_normal(len(dataset)).astype(np.float32) * 0.1
    out = {"config": {"torch_threads": args.torch_threads, "transitions": len(dataset), "image_size": args.image_size,
                      "H": args.chunk_horizon, "critic": {k: getattr(cconf, k) for k in (
                          "ensemble_size", "critic_hidden_dim", "critic_layers", "critic_batch_size",
                          "num_policy_samples")},
                      "policy": {"policy_batch_size": iconf.policy_batch_size, "cnn_channels": list(pconf.cnn_channels),
                                 "hidden_dim": pconf.hidden_dim, "head_hidden_dim": pconf.head_hidden_dim,
                                 "head_layers": pconf.head_layers}},
           "policy_samples_per_s": round(len(bank.samples) * bank.n / bank_s, 1)}

    def timed(fn, steps):
        fn(1)  # warm-up (allocations, first-call overheads)
        t = time.perf_counter()
        fn(steps)
        return round(steps / (time.perf_counter() - t), 2)

    for blocks in (8, 4, 1):
        def critic_steps(n, blocks=blocks):
            c = CriticConfig(critic_steps=n)
            fit_critic(critic_for_policy(policy, c), dataset, "aloe", bank, c, seed=0, batch_blocks=blocks)

        def policy_steps(n, blocks=blocks):
            iconf_n = ImprovementConfig(policy_steps=n)
            improve_policy(policy, dataset, adv, iconf_n, seed=0, batch_blocks=blocks)

        out[f"critic_updates_per_s_blocks{blocks}"] = timed(critic_steps, args.train_steps)
        out[f"policy_updates_per_s_blocks{blocks}"] = timed(policy_steps, args.train_steps)
    out["critic_updates_per_s_frozen_encoder"] = timed(
        lambda n: fit_critic(critic_for_policy(policy, CriticConfig(critic_steps=n, freeze_encoder=True)), dataset,
                             "aloe", bank, CriticConfig(critic_steps=n, freeze_encoder=True), seed=0),
        args.train_steps * 5)
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="aloe_bench_ingestion_"))
    bags_dir = Path(args.bags_dir) if args.bags_dir else tmp / "bags"
    try:
        t0 = time.perf_counter()
        bags = generate_bags(bags_dir, args.episodes, args.ticks, args.image_size)
        print(f"{len(bags)} bags ({args.ticks} ticks, {args.image_size}x{args.image_size} images) ready in "
              f"{time.perf_counter() - t0:.1f} s under {bags_dir}", flush=True)
        results = {"args": vars(args), "ingestion": bench_ingestion(args, bags, tmp / "cache")}
        ing = results["ingestion"]
        print(f"ingestion, {ing['transitions']} transitions from {ing['bags']} bags ({ing['bag_mb']} MB):\n"
              f"  naive per-message deserialize: {ing['naive_transitions_per_s']:>10.1f} transitions/s\n"
              f"  cached, first run (decode):    {ing['cold_transitions_per_s']:>10.1f} transitions/s\n"
              f"  cached, warm (mmap):           {ing['warm_transitions_per_s']:>10.1f} transitions/s\n"
              f"  warm / naive: {ing['warm_over_naive']}x (target >= 10)", flush=True)
        if not args.skip_training:
            results["training"] = bench_training(args, bags, tmp / "cache")
            print("training: " + json.dumps(results["training"], indent=1), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
