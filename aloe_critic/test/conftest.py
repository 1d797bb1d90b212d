"""aloe_critic test set-up: one torch thread (shared machine), bag and checkpoint fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from critic_test_data import COMMON, small_config, write_episode_bag, write_training_bags

torch.set_num_threads(1)


@pytest.fixture
def episode_bag(tmp_path):
    """Factory: episode_bag(name, **kwargs) -> bag directory under tmp_path/bags."""
    def make(name: str, **kwargs) -> Path:
        return write_episode_bag(tmp_path / "bags" / name, **kwargs)
    return make


# --- checkpoints for the trainer / evaluation / replay tests (tiny networks, a few steps) -------

@pytest.fixture(scope="session")
def initial_checkpoint(tmp_path_factory):
    """Bags + a BC-initialised tiny policy made by the CLI (--init-only)."""
    import json

    from aloe_critic.train import main
    from critic_test_data import TINY_POLICY

    root = tmp_path_factory.mktemp("train")
    write_training_bags(root / "bags")
    (root / "policy.json").write_text(json.dumps(TINY_POLICY))
    rc = main(["--bags", str(root / "bags"), "--init-only", "--out", str(root / "iter0"), "--cache-dir",
               str(root / "cache"), "--policy-config-file", str(root / "policy.json"), *COMMON])
    assert rc == 0
    return root


@pytest.fixture(scope="session")
def aloe_checkpoint(initial_checkpoint):
    """(root, checkpoint dir) of one ALOE iteration from iter0 (critic/ included)."""
    from aloe_critic.train import train_iteration

    root = initial_checkpoint
    result = train_iteration(small_config(root, method="aloe"), [root / "bags"], root / "iter0", root / "iter1")
    return root, result.checkpoint_dir
