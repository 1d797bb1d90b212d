"""torchrun data parallelism: 2 ranks equal 1 process (critic and policy); ranks stay in sync."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

SCRIPT = textwrap.dedent('''
    import glob, json, sys
    import numpy as np, torch
    torch.set_num_threads(1)
    from aloe_critic.distributed import setup, rank_world, all_gather_objects, teardown
    setup("cpu")
    from test_critic_small_mdp import ChainPolicy, behaviour_episodes, fitted_q, H, GAMMA
    from test_improvement import TinyFlowPolicy, two_chunk_dataset
    from aloe_critic.critic import PolicySampleBank
    from aloe_critic.dataset import TransitionDataset
    from aloe_critic.improvement import ImprovementConfig, improve_policy

    dataset = TransitionDataset(behaviour_episodes(200, np.random.default_rng(0)), chunk_horizon=H, gamma=GAMMA)
    bank = PolicySampleBank(ChainPolicy(), dataset, n=4, seed=0, batch_size=64)
    q = fitted_q("aloe", dataset, bank, steps=40)
    q_lambda = fitted_q("aloe", dataset, bank, steps=40, td_lambda=0.5, lambda_refresh=10)  # the table on each rank
    d, adv = two_chunk_dataset()
    torch.manual_seed(0)
    policy = TinyFlowPolicy()
    # batch_blocks 2 in both runs: the one-process run reproduces the 2-rank one (the default, one
    # block per process, would give each its own noise)
    improve_policy(policy, d, adv, ImprovementConfig(policy_steps=20, policy_batch_size=16, policy_lr=1e-3), seed=0,
                   batch_blocks=2)
    checksum = float(sum(p.detach().double().sum() for p in policy.parameters()))
    bank_sum = float(bank.samples.double().sum())
    out = {"rank_world": list(rank_world()), "q": q.tolist(), "q_lambda": q_lambda.tolist(),
           "policy_checksums": all_gather_objects(checksum),
           "bank_sum": bank_sum}
    teardown()
    # what is left running after teardown: a gloo thread would make the interpreter's exit abort
    out["threads_after_teardown"] = sorted(open(p).read().strip() for p in glob.glob("/proc/self/task/*/comm"))
    if out["rank_world"][0] == 0:
        json.dump(out, open(sys.argv[1], "w"))
''')


def run(cmd, tmp_path, env):
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_two_rank_torchrun_critic_and_policy_equal_single_process(tmp_path):
    pytest.importorskip("torch.distributed.run")
    script = tmp_path / "ddp_check.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    run([sys.executable, str(script), str(tmp_path / "single.json")], tmp_path, env)
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
         str(tmp_path / "ddp.json")], tmp_path, env)
    single = json.loads((tmp_path / "single.json").read_text())
    ddp = json.loads((tmp_path / "ddp.json").read_text())
    assert single["rank_world"] == [0, 1] and ddp["rank_world"] == [0, 2]
    assert ddp["bank_sum"] == pytest.approx(single["bank_sum"], rel=1e-6)          # same pi samples
    np.testing.assert_allclose(ddp["q"], single["q"], atol=2e-4)                     # same critic
    np.testing.assert_allclose(ddp["q_lambda"], single["q_lambda"], atol=2e-4)       # and with lambda-returns
    assert not np.allclose(single["q_lambda"], single["q"], atol=1e-3)
    assert not [t for t in ddp["threads_after_teardown"] if "gloo" in t], ddp["threads_after_teardown"]
    a, b = ddp["policy_checksums"]
    assert a == pytest.approx(b, rel=1e-9)                                            # ranks in sync
    assert a == pytest.approx(single["policy_checksums"][0], rel=1e-6)                # same policy update


def _aloe_train() -> list[str]:
    """The installed aloe-train entry point (what a user runs), else the module."""
    import shutil
    exe = shutil.which("aloe-train")
    return [exe] if exe else [sys.executable, "-m", "aloe_critic.train"]


def _tensors(path):
    from safetensors.torch import load_file
    return load_file(str(path))


@pytest.mark.slow
def test_two_rank_torchrun_aloe_train_iteration_equals_single_process(initial_checkpoint, tmp_path):
    """`torchrun --nproc_per_node 2 aloe-train` (sharded decoding into a fresh cache, rank-0
    checkpoint) writes the same policy and critic tensors as `aloe-train` in one process."""
    pytest.importorskip("torch.distributed.run")
    from critic_test_data import COMMON

    root = initial_checkpoint
    small = [*COMMON, "--method", "aloe", "--ensemble-size", "3", "--critic-hidden-dim", "16", "--critic-steps", "10",
             "--critic-batch-size", "16", "--num-policy-samples", "2", "--num-value-samples", "4",
             "--policy-steps", "10", "--batch-blocks", "2"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    outs = {}
    for name, launcher in (("single", []), ("ddp", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                     "--nproc_per_node", "2", "--no-python"])):
        outs[name] = tmp_path / name
        cmd = launcher + _aloe_train() + ["--bags", str(root / "bags"), "--policy-in", str(root / "iter0"),
                                                 "--out", str(outs[name]),
                                                 "--cache-dir", str(tmp_path / f"cache-{name}"),
                                                 *small]
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert proc.stdout.count("wrote ") == 1, proc.stdout  # rank 0 alone writes and reports
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    # Same noise per sample, so only the gradient summation order differs (blocks within a rank,
    # then across ranks): ~1e-7 relative. Adam turns a near-zero gradient into a full +-lr step,
    # so a parameter whose gradient sits at ~0 (first conv on these flat test images) may move
    # by up to ~lr; every other tensor agrees to ~1e-7.
    worst = {}
    for rel in ("model.safetensors", "critic/critic.safetensors"):
        single, ddp = _tensors(outs["single"] / rel), _tensors(outs["ddp"] / rel)
        assert single.keys() == ddp.keys()
        for key in single:
            torch.testing.assert_close(ddp[key], single[key], rtol=1e-3, atol=2e-4, msg=f"{rel}: {key}")
            worst[f"{rel}:{key}"] = float((ddp[key] - single[key]).abs().max())
    assert sorted(worst.values())[len(worst) // 2] < 1e-6, worst  # the median tensor: float noise only
    manifest = json.loads((outs["ddp"] / "data_manifest.json").read_text())
    assert manifest["counts"]["bags"] == 3 and len(manifest["decoded_this_run"]) == 0  # ranks decoded it first


def test_rank_blocks_partition_the_one_process_blocks_and_refuse_a_world_that_does_not_divide(monkeypatch):
    import aloe_critic.distributed as distributed

    one = distributed.rank_blocks(64, 8)
    assert [b for b, _ in one] == list(range(8)) and distributed.span(one) == slice(0, 64)
    parts = []
    for rank in range(4):
        monkeypatch.setattr(distributed, "rank_world", lambda rank=rank: (rank, 4))
        parts += distributed.rank_blocks(64, 8)
    assert parts == one  # each block (and so its noise) is owned by exactly one rank
    monkeypatch.setattr(distributed, "rank_world", lambda: (0, 3))
    with pytest.raises(ValueError, match="multiple of the world size"):
        distributed.rank_blocks(64, 8)


def test_default_batch_blocks_are_one_per_process(monkeypatch):
    import aloe_critic.distributed as distributed

    assert distributed.DEFAULT_BATCH_BLOCKS == 0
    assert distributed.rank_blocks(64, 0) == [(0, slice(0, 64))]  # one process: one forward per batch
    parts = []
    for rank in range(2):
        monkeypatch.setattr(distributed, "rank_world", lambda rank=rank: (rank, 2))
        parts += distributed.rank_blocks(64, 0)
    assert parts == [(0, slice(0, 32)), (1, slice(32, 64))]  # two processes: one block each


def test_block_rng_gives_a_block_the_same_noise_and_dropout_wherever_it_runs():
    from aloe_critic.distributed import block_rng

    drop = torch.nn.Dropout(0.5)
    torch.manual_seed(123)
    with block_rng(0, 5, 3) as gen:
        a = (torch.randn(4, generator=gen), drop(torch.ones(6)))
    torch.rand(10)  # another rank's global RNG is elsewhere
    with block_rng(0, 5, 3) as gen:
        b = (torch.randn(4, generator=gen), drop(torch.ones(6)))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    with block_rng(0, 5, 4) as gen:
        assert not torch.equal(torch.randn(4, generator=gen), a[0])
