#!/usr/bin/env python3
"""Camera conversion cost per 640x480 frame, per encoding, against a plain numpy copy of the same
bytes measured in the same run (issue 18). The robot path (cv_bridge) is timed where it imports.

    python bench/bench_image_conversion.py [--repeats 200] [--json out.json]

Prints a markdown table; writes nothing tracked.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

H, W = 480, 640


def frames() -> dict[str, tuple[bytes, int, int]]:
    """encoding -> (data, step, is_bigendian) of a random 640x480 frame."""
    rng = np.random.default_rng(0)
    per = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "mono8": 1, "rgb16": 6, "mono16": 2, "yuv422": 2, "yuv422_yuy2": 2,
           "bayer_rggb8": 1, "16UC1": 2, "32FC1": 4}
    out = {}
    for enc, n in per.items():
        data = rng.integers(0, 256, H * W * n, dtype=np.uint8)
        if enc == "32FC1":
            data = rng.uniform(0.2, 5.0, H * W).astype(np.float32).view(np.uint8)
        out[enc] = (data.tobytes(), W * n, 0)
    return out


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--json", default="", help="also write the numbers here")
    a = p.parse_args(argv)
    from aloe_data.observation import DEPTH_ENCODINGS, depth_to_metres, image_to_rgb

    rows = []
    for enc, (data, step, big) in frames().items():
        copy = best_of(lambda: np.frombuffer(data, np.uint8).copy(), a.repeats)
        convert = depth_to_metres if enc in DEPTH_ENCODINGS else image_to_rgb
        t = best_of(lambda: convert(enc, H, W, step, data, big), a.repeats)
        rows.append({"encoding": enc, "convert_ms": t * 1e3, "copy_ms": copy * 1e3, "ratio": t / copy})
    print(f"640x480, median of {a.repeats}; copy = np.frombuffer(data).copy() of the same bytes\n")
    print("| encoding | conversion (ms) | numpy copy (ms) | ratio to the copy |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['encoding']} | {r['convert_ms']:.3f} | {r['copy_ms']:.3f} | {r['ratio']:.1f}x |")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
