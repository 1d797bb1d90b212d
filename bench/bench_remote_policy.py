#!/usr/bin/env python3
"""Remote inference over openpi's websocket protocol vs the same model in process (issue 16).

Serves a checkpoint with ``aloe-serve-policy`` on loopback and times, per chunk, the remote
round trip (request packing, websocket transfer, server inference, reply) against in-process
``predict_chunk`` of the same checkpoint, in the same run; images at the checkpoint's size and at
224x224 (what pi0 servers take) to show the transfer's share. Then the critic's use: ``sample`` of
8 chunks at each of 16 observations, one request at a time against 16 pipelined on the connection.

    python bench/bench_remote_policy.py [--requests 200] [--json out.json]

Writes nothing tracked.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--json", default="")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    from aloe_policy import testing
    from aloe_policy.backends import load_backend
    from aloe_bringup.loop import LOOP_POLICY_CONFIG

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in (64, 224):
            ckpt = Path(tmp) / f"ckpt{size}"
            config = {**{k: tuple(v) if isinstance(v, list) else v for k, v in LOOP_POLICY_CONFIG.items()},
                      "image_size": size, "camera_names": ("workspace",), "text_embed_dim": 32}
            testing.save_tiny_checkpoint(ckpt, 0, config, "pick up the cube")
            server, port = testing.start_server(str(ckpt))
            try:
                remote = load_backend("openpi_remote", f"ws://127.0.0.1:{port}", timeout_s=10.0)
                local = load_backend("flow_matching", str(ckpt))
                obs = {"images": {"workspace": np.random.default_rng(0).integers(0, 256, (size, size, 3), np.uint8)},
                       "proprio": np.zeros(18, np.float32), "task": "pick up the cube"}
                gen = torch.Generator().manual_seed(0)
                for _ in range(10):  # warm-up both
                    remote.predict_chunk(obs)
                    local.predict_chunk(obs, gen)
                times = {"local": [], "remote": []}
                for _ in range(a.requests):  # interleaved: both see the same machine load
                    t0 = time.perf_counter()
                    local.predict_chunk(obs, gen)
                    times["local"].append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    remote.predict_chunk(obs)
                    times["remote"].append(time.perf_counter() - t0)
                batch = {"images": {"workspace": np.repeat(obs["images"]["workspace"][None], 16, 0)},
                         "proprio": np.zeros((16, 18), np.float32), "task": [obs["task"]] * 16}
                sampling = {}
                for in_flight in (1, 16, 1, 16):  # twice each, interleaved; the faster of the two counts
                    t0 = time.perf_counter()
                    remote.sample(batch, 8, in_flight=in_flight)
                    sampling[in_flight] = min(sampling.get(in_flight, np.inf), time.perf_counter() - t0)
                remote.close()
            finally:
                server.terminate()
                server.wait(10)
            loc, rem = np.median(times["local"]) * 1e3, np.median(times["remote"]) * 1e3
            rows.append({"image_size": size, "local_ms": loc, "remote_ms": rem, "remote_p99_ms":
                         float(np.percentile(times["remote"], 99) * 1e3), "ratio": rem / loc,
                         "sample_16x8_sequential_s": sampling[1], "sample_16x8_pipelined_s": sampling[16]})
    print(f"median of {a.requests} chunks, loopback, server and client on the same 2 cores\n")
    print("| image | in-process predict_chunk (ms) | remote round trip (ms) | remote p99 (ms) | ratio |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['image_size']}x{r['image_size']} | {r['local_ms']:.2f} | {r['remote_ms']:.2f} | "
              f"{r['remote_p99_ms']:.2f} | {r['ratio']:.2f}x |")
    print("\n| image | sample 16 obs x 8 chunks, one at a time (s) | 16 in flight (s) | speed-up |\n|---|---|---|---|")
    for r in rows:
        seq, pipe = r["sample_16x8_sequential_s"], r["sample_16x8_pipelined_s"]
        print(f"| {r['image_size']}x{r['image_size']} | {seq:.3f} | {pipe:.3f} | {seq / pipe:.2f}x |")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
