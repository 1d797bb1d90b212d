"""The GPU training path the README documents ("Training on a GPU workstation or cluster"):
``aloe-train --device cuda`` and the same under torchrun (NCCL). Skipped where torch sees no CUDA
device; run on a GPU machine with ``pytest aloe_critic/test/test_cuda_training.py``.

Every random draw of a training run but dropout's masks comes from CPU generators (distributed.py;
dropout draws from the device's own generator, which differs between CPU and CUDA), so without
dropout and TF32 the CUDA run of an iteration is the CPU run up to float arithmetic: the test holds
them to that, not only to "it ran".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from critic_test_data import COMMON, TINY_POLICY, small_config, write_training_bags

DEVICE = "cuda"
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    """Bags and an initial checkpoint whose text cache holds the bags' task, so nothing here loads
    the sentence encoder (a GPU machine need not have its weights)."""
    from aloe_policy.testing import save_tiny_checkpoint

    root = tmp_path_factory.mktemp("cuda")
    write_training_bags(root / "bags")
    save_tiny_checkpoint(root / "iter0", seed=0, config=TINY_POLICY, task="pick the cube")
    save_tiny_checkpoint(root / "iter0_no_dropout", seed=0, config={**TINY_POLICY, "dropout": 0.0}, task="pick the cube")
    return root


def _params(checkpoint: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(checkpoint / "model.safetensors"))


def _max_relative_difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k] - b[k]).max() / (np.abs(a[k]).max() + 1e-6)) for k in a)


def _cpu_and_device_runs(root: Path, start: str, out: Path):
    from aloe_critic.train import train_iteration

    runs = []
    for device in ("cpu", DEVICE):
        config = small_config(root, method="aloe")
        config.device = device
        runs.append(train_iteration(config, [root / "bags"], root / start, out / device))
    cpu, gpu = runs
    a_cpu, a_gpu = cpu.advantage_stats["advantage"], gpu.advantage_stats["advantage"]
    gap = max(abs(a_gpu[k] - a_cpu[k]) for k in ("mean", "std", "min", "max"))
    difference = _max_relative_difference(_params(cpu.checkpoint_dir), _params(gpu.checkpoint_dir))
    print(f"{start}: advantage cpu {a_cpu} {DEVICE} {a_gpu}; largest advantage-statistic gap {gap:.2e}, "
          f"largest relative parameter difference {difference:.2e}")
    return cpu, gpu, gap, difference


def test_without_dropout_and_tf32_an_aloe_iteration_on_cuda_equals_the_cpu_run(start, tmp_path):
    default_tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # cuDNN convolutions in full float32
    try:
        cpu, _, gap, difference = _cpu_and_device_runs(start, "iter0_no_dropout", tmp_path)
    finally:
        torch.backends.cudnn.allow_tf32 = default_tf32
    assert gap < 1e-3 * cpu.advantage_stats["advantage"]["std"] + 1e-6 and difference < 1e-3


def test_an_aloe_iteration_on_cuda_writes_a_checkpoint_that_loads_on_a_cpu_and_agrees_with_the_cpu_run(start, tmp_path):
    """torch's defaults (dropout masks from the CUDA generator, TF32 convolutions): a different draw
    of the same training, close to the CPU's (measured on an H200: advantages 0.003 apart against a
    spread of 0.1)."""
    from aloe_policy.model import FlowMatchingPolicy, validate_checkpoint

    cpu, gpu, gap, _ = _cpu_and_device_runs(start, "iter0", tmp_path)
    ok, why = validate_checkpoint(gpu.checkpoint_dir)  # on the CPU: the robot's loader
    assert ok, why
    assert FlowMatchingPolicy.from_pretrained(gpu.checkpoint_dir).policy_id == gpu.policy_id
    assert (gpu.checkpoint_dir / "critic" / "critic.safetensors").is_file()
    assert gap < 0.25 * cpu.advantage_stats["advantage"]["std"]


def test_torchrun_with_nccl_trains_an_iteration_like_one_process(start, tmp_path):
    """The README's command (torchrun ... aloe-train --device cuda) on the GPUs this machine has, up
    to two: NCCL process group, one GPU per process, rank 0 writes the checkpoint."""
    pytest.importorskip("torch.distributed.run")
    from aloe_policy.model import validate_checkpoint

    root = start
    n = min(2, torch.cuda.device_count())
    args = ["--bags", str(root / "bags"), "--policy-in", str(root / "iter0"), "--cache-dir", str(root / "cache"),
            "--method", "aloe", "--device", DEVICE, "--batch-blocks", "2", "--ensemble-size", "3",
            "--critic-steps", "20", "--critic-batch-size", "16", "--num-policy-samples", "2", *COMMON]
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    single = subprocess.run([sys.executable, "-m", "aloe_critic.train", *args, "--out", str(tmp_path / "single")],
                            env=env, capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stdout[-3000:] + single.stderr[-3000:]
    ranks = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
                            "-m", "aloe_critic.train", *args, "--out", str(tmp_path / "torchrun")],
                           env=env, capture_output=True, text=True, timeout=600)
    assert ranks.returncode == 0, ranks.stdout[-3000:] + ranks.stderr[-3000:]
    ok, why = validate_checkpoint(tmp_path / "torchrun")
    assert ok, why
    config = json.loads((tmp_path / "torchrun" / "train_config.json").read_text())
    assert config["device"].startswith(DEVICE)
    difference = _max_relative_difference(_params(tmp_path / "single"), _params(tmp_path / "torchrun"))
    print(f"{n} rank(s) vs one process: largest relative parameter difference {difference:.2e}")
    assert difference < 1e-2
