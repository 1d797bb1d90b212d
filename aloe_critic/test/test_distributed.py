"""torchrun data parallelism: the 2-rank critic equals the 1-process critic; ranks stay in sync."""

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
    import json, sys
    import numpy as np, torch
    torch.set_num_threads(1)
    from aloe_critic.distributed import setup, rank_world, all_gather_objects
    setup("cpu")
    from test_critic_small_mdp import ChainPolicy, behaviour_episodes, fitted_q, H, GAMMA
    from test_improvement import TinyFlowPolicy, two_chunk_dataset
    from aloe_critic.critic import PolicySampleBank
    from aloe_critic.dataset import TransitionDataset
    from aloe_critic.improvement import ImprovementConfig, improve_policy

    dataset = TransitionDataset(behaviour_episodes(200, np.random.default_rng(0)), chunk_horizon=H, gamma=GAMMA)
    bank = PolicySampleBank(ChainPolicy(), dataset, n=4, seed=0, batch_size=64)
    q = fitted_q("aloe", dataset, bank, steps=40)
    d, adv = two_chunk_dataset()
    torch.manual_seed(0)
    policy = TinyFlowPolicy()
    improve_policy(policy, d, adv, ImprovementConfig(policy_steps=20, policy_batch_size=16, policy_lr=1e-3), seed=0)
    checksum = float(sum(p.double().sum() for p in policy.parameters()))
    bank_sum = float(bank.samples.double().sum())
    out = {"rank_world": list(rank_world()), "q": q.tolist(), "policy_checksums": all_gather_objects(checksum),
           "bank_sum": bank_sum}
    if rank_world()[0] == 0:
        json.dump(out, open(sys.argv[1], "w"))
''')


def run(cmd, tmp_path, env):
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_two_rank_torchrun_critic_equals_single_process(tmp_path):
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
    a, b = ddp["policy_checksums"]
    assert a == pytest.approx(b, rel=1e-9)                                            # ranks in sync
