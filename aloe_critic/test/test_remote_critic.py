"""The critic for a policy served over openpi's websocket protocol (a backend with no features and
no loss): aloe-train fits a critic with its own encoder against the live server and exports the
advantages; aloe-evaluate reloads that critic and samples the server again."""

import csv
import json

import numpy as np
import pytest

from aloe_critic.evaluate import evaluate_bags
from aloe_critic.train import train_iteration
from aloe_policy.testing import start_server
from critic_test_data import small_config


def test_a_served_policy_gets_a_critic_of_its_own_and_its_advantages_exported(initial_checkpoint, tmp_path):
    from aloe_policy.model import FlowMatchingPolicy

    root = initial_checkpoint
    served_id = FlowMatchingPolicy.from_pretrained(root / "iter0").policy_id
    server, port = start_server(str(root / "iter0"))
    uri = f"ws://127.0.0.1:{port}"
    try:
        config = small_config(tmp_path, method="aloe", backend="openpi_remote")
        config.critic.num_value_samples = 4
        out = tmp_path / "remote_it1"
        result = train_iteration(config, [root / "bags"], uri, out)
        assert result.policy_in_id == served_id == result.policy_id, "no new policy: the served one is evaluated"
        assert not (out / "model.safetensors").exists() and (out / "critic" / "critic.safetensors").is_file()
        meta = json.loads((out / "critic" / "critic_config.json").read_text())
        assert meta["evaluated_backend"] == "openpi_remote" and meta["evaluated_policy_dir"] == uri
        own = meta["own_encoder"]
        assert len(own["normalization"]["proprio_mean"]) == 18 and list(own["text_cache"]) == ["pick the cube"]
        with open(out / "values.csv") as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) == result.num_transitions == 30
        adv = np.array([float(r["advantage"]) for r in rows])
        weight = np.array([float(r["weight"]) for r in rows])
        assert np.isfinite(adv).all() and adv.std() > 0
        np.testing.assert_allclose(weight, np.minimum(np.exp(adv / 0.1), 20.0), rtol=1e-4)
        assert {r["policy_id"] for r in rows} == {served_id}

        # evaluation reloads the critic (its normalisation and text cache from the JSON) and samples the server
        scored, _ = evaluate_bags([root / "bags"], out, cache_dir=str(tmp_path / "cache"), num_policy_samples=4)
        np.testing.assert_allclose([r["q"] for r in scored], [float(r["q"]) for r in rows], rtol=1e-4, atol=1e-5)
    finally:
        server.kill()
        server.wait()
    with pytest.raises(RuntimeError, match=f"cannot reach the policy server at {uri}"):
        evaluate_bags([root / "bags"], out, cache_dir=str(tmp_path / "cache"))


def test_a_served_policy_cannot_be_imitated_here_and_needs_its_address(initial_checkpoint, tmp_path):
    root = initial_checkpoint
    with pytest.raises(ValueError, match="backend openpi_remote needs --policy-in"):
        train_iteration(small_config(tmp_path, method="aloe", backend="openpi_remote"), [root / "bags"], None,
                        tmp_path / "x")
    server, port = start_server(str(root / "iter0"))
    try:
        with pytest.raises(ValueError, match="--method bc would train it"):
            train_iteration(small_config(tmp_path, method="bc", backend="openpi_remote"), [root / "bags"],
                            f"ws://127.0.0.1:{port}", tmp_path / "y")
    finally:
        server.kill()
        server.wait()
