"""aloe-train: init-only BC, one ALOE iteration, config precedence, kill-safety."""

import json

import numpy as np
import pytest
import yaml

import aloe_critic.train as train_mod
from aloe_critic.train import TrainConfig, build_parser, config_from_args, main, train_iteration
from critic_test_data import COMMON, small_config

def test_init_only_writes_a_loadable_checkpoint_with_config_manifest_and_curves(initial_checkpoint):
    from aloe_policy.model import FlowMatchingPolicy, validate_checkpoint

    ck = initial_checkpoint / "iter0"
    for name in ("model.safetensors", "config.json", "train_config.json", "data_manifest.json", "curves.csv",
                 "curves.png"):
        assert (ck / name).is_file(), name
    ok, message = validate_checkpoint(ck)
    assert ok, message
    manifest = json.loads((ck / "data_manifest.json").read_text())
    assert manifest["counts"]["bags"] == 3 and manifest["counts"]["transitions"] == 30
    assert all(len(b["sha256"]) == 64 for b in manifest["bags"])
    assert manifest["counts"]["intervention_transitions"] > 0
    saved = json.loads((ck / "train_config.json").read_text())
    assert saved["init_only"] is True and saved["improvement"]["policy_steps"] == 15
    config = FlowMatchingPolicy.from_pretrained(ck).config
    assert config.chunk_horizon == 4
    assert config.camera_formats == ("rgb8 8x8",), "the robot contract records what each camera sent"


def test_bags_from_a_camera_unlike_the_policys_training_are_refused_by_name(initial_checkpoint, tmp_path):
    from critic_test_data import write_episode_bag

    pytest.importorskip("cv2")
    root = initial_checkpoint
    write_episode_bag(tmp_path / "bags" / "grey", num_ticks=10, encoding="mono16")
    with pytest.raises(ValueError, match=r"camera 'front' of these bags sends mono images \(mono16 8x8\) but the "
                                         r"policy was trained on colour \(rgb8 8x8\)"):
        train_iteration(small_config(tmp_path, method="bc"), [tmp_path / "bags"],
                        root / "iter0", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    rc = main(["--bags", str(tmp_path / "bags"), "--policy-in", str(root / "iter0"), "--out", str(tmp_path / "out"),
               "--cache-dir", str(tmp_path / "cache"), *COMMON])
    assert rc == 1 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("method", ["aloe", "td1", "progress", "bc"])
def test_iteration_improves_from_previous_checkpoint(initial_checkpoint, method):
    from aloe_policy.model import FlowMatchingPolicy, validate_checkpoint

    root = initial_checkpoint
    before = FlowMatchingPolicy.from_pretrained(root / "iter0").policy_id
    result = train_iteration(small_config(root, method=method), [root / "bags"], root / "iter0", root / f"it1-{method}")
    assert result.policy_in_id == before and result.policy_id != before
    assert validate_checkpoint(result.checkpoint_dir)[0]
    assert (result.checkpoint_dir / "critic" / "critic.safetensors").is_file() == (method != "bc")
    assert "policy_improvement" in result.curves or "policy_bc" in result.curves
    if method != "bc":
        meta = json.loads((result.checkpoint_dir / "critic" / "critic_config.json").read_text())
        assert meta["evaluated_policy_id"] == before and meta["method"] == method
        assert np.isfinite(result.advantage_stats["advantage"]["mean"])


def test_killed_iteration_leaves_previous_checkpoint_valid(initial_checkpoint, monkeypatch):
    from aloe_policy.model import validate_checkpoint

    root = initial_checkpoint
    target = root / "kill-target"
    train_iteration(small_config(root, method="bc"), [root / "bags"], root / "iter0", target)
    before = (target / "model.safetensors").read_bytes()

    def killed(*a, **k):
        raise KeyboardInterrupt  # what SIGINT mid-improvement looks like in-process
    monkeypatch.setattr(train_mod, "improve_policy", killed)
    with pytest.raises(KeyboardInterrupt):
        train_iteration(small_config(root, method="aloe", overwrite=True), [root / "bags"], root / "iter0", target)
    assert (target / "model.safetensors").read_bytes() == before and validate_checkpoint(target)[0]
    assert not [p for p in root.iterdir() if p.name.startswith(".kill-target.tmp")]


def test_yaml_config_is_overridden_by_flags(tmp_path):
    cfg = tmp_path / "train.yaml"
    cfg.write_text(yaml.safe_dump({"method": "td1", "critic": {"ensemble_size": 4, "aggregate": "mean_std"},
                                   "beta": 0.3, "cameras": ["front", "wrist"]}))
    args = build_parser().parse_args(["--bags", "x", "--out", "y", "--config", str(cfg), "--beta", "0.5",
                                      "--no-use-velocity"])
    config = config_from_args(args)
    assert config.method == "td1" and config.critic.ensemble_size == 4 and config.critic.aggregate == "mean_std"
    assert config.improvement.beta == 0.5 and config.ingestion.cameras == ["front", "wrist"]
    assert config.ingestion.use_velocity is False
    with pytest.raises(ValueError, match="unknown config key"):
        TrainConfig.from_dict({"ensemble_sise": 3})
    with pytest.raises(ValueError, match="aggregate"):
        TrainConfig.from_dict({"aggregate": "max"})


def test_help_documents_methods_and_every_knob(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for text in ("--method", "--ensemble-size", "--subset-size", "--beta", "--w-max", "--init-only", "--kappa"):
        assert text in out


def test_sigkill_mid_iteration_leaves_the_existing_checkpoint_valid(initial_checkpoint, tmp_path):
    import shutil
    import signal
    import subprocess
    import sys
    import time

    from aloe_policy.model import validate_checkpoint

    root = initial_checkpoint
    target = tmp_path / "ckpt"
    shutil.copytree(root / "iter0", target)
    before = (target / "model.safetensors").read_bytes()
    log = tmp_path / "train.log"
    cmd = [sys.executable, "-m", "aloe_critic.train", "--bags", str(root / "bags"), "--policy-in", str(root / "iter0"),
           "--out", str(target), "--overwrite", "--method", "bc", "--cache-dir", str(root / "cache"), *COMMON,
           "--policy-steps", "1000000"]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while "improving the policy" not in log.read_text() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert "improving the policy" in log.read_text(), log.read_text()[-2000:]
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert (target / "model.safetensors").read_bytes() == before
    ok, message = validate_checkpoint(target)
    assert ok, message


def test_shipped_train_yaml_is_the_default_config():
    from pathlib import Path

    shipped = yaml.safe_load((Path(train_mod.__file__).resolve().parents[1] / "config" / "train.yaml").read_text())
    assert TrainConfig.from_dict(shipped) == TrainConfig()


def test_a_stage_left_by_a_run_killed_while_writing_is_removed_by_the_next_run(initial_checkpoint):
    root = initial_checkpoint
    left = root / ".cleanup-target.tmp-killed"  # what SIGKILL during save_pretrained leaves
    left.mkdir()
    (left / "model.safetensors").write_bytes(b"partial")
    result = train_iteration(small_config(root, method="bc"), [root / "bags"], root / "iter0", root / "cleanup-target")
    assert result.checkpoint_dir.is_dir() and not left.exists()


def test_a_policy_trained_on_a_depth_camera_records_its_range_and_refuses_bags_decoded_with_another(tmp_path):
    from critic_test_data import write_episode_bag

    from aloe_policy.model import FlowMatchingPolicy

    for i in range(2):
        write_episode_bag(tmp_path / "bags" / f"d{i}", num_ticks=10, encoding="16UC1")
    config = small_config(tmp_path, method="bc", init_only=True)
    config.ingestion.depth_range_m = 1.5
    train_iteration(config, [tmp_path / "bags"], None, tmp_path / "iter0")
    policy = FlowMatchingPolicy.from_pretrained(tmp_path / "iter0")
    assert policy.config.depth_range_m == 1.5 and policy.config.camera_formats == ("16UC1 8x8",)
    other = small_config(tmp_path, method="bc")
    other.ingestion.depth_range_m = 3.0
    with pytest.raises(ValueError, match=r"decoded with depth_range_m 3 but the policy .* maps 1.5 m to white"):
        train_iteration(other, [tmp_path / "bags"], tmp_path / "iter0", tmp_path / "iter1")


def test_value_data_current_takes_v_from_a_critic_of_the_policys_own_chunks_and_evaluate_repeats_it(
        initial_checkpoint, tmp_path):
    """value_data "current": V of the advantages from a second critic fitted only on the evaluated policy's own
    chunks (Q stays the all-data critic's); the checkpoint keeps that critic and aloe-evaluate's advantages are
    the iteration's. Bags the policy did not drive: V stays the all-data critic's, and the stats say why."""
    import csv

    from aloe_critic.critic import VALUE_CRITIC_DIR
    from aloe_critic.dataset import TransitionDataset
    from aloe_critic.evaluate import load_critic, load_value_critic
    from aloe_critic.evaluate import main as evaluate_main
    from aloe_critic.train import run_iteration, train_iteration
    from aloe_critic.values import MIN_CURRENT_EPISODES, chunk_values, current_policy_view
    from aloe_data.ingestion import ingest_bags
    from aloe_policy.model import FlowMatchingPolicy
    from critic_test_data import small_config, write_training_bags

    root = initial_checkpoint
    pid = FlowMatchingPolicy.from_pretrained(root / "iter0").policy_id
    write_training_bags(tmp_path / "bags", policy_id=pid)  # iter0 drove ep0 (all) and ep1 (before the takeover)
    config = small_config(tmp_path, method="aloe")
    config.critic.value_data = "current"
    dataset = TransitionDataset(ingest_bags([tmp_path / "bags"], config.ingestion).episodes, 4, 0.99)
    own = current_policy_view(dataset, pid)
    assert (dataset.policy_id[own.indices] == pid).all() and (dataset.source_fraction[own.indices, 0] == 1).all()
    assert sorted(set(dataset.episode[own.indices])) == [0, 1] and MIN_CURRENT_EPISODES <= 2
    assert 0 < len(own) < len(dataset)

    out = run_iteration(config, dataset, FlowMatchingPolicy.from_pretrained(root / "iter0"))
    assert out.value_critic is not None and "critic_value" in out.curves
    stats = out.advantage_stats["value_data"]
    assert stats["value_data"] == "current" and stats["transitions"] == len(own) and stats["episodes"] == 2
    before = FlowMatchingPolicy.from_pretrained(root / "iter0")  # the policy both critics evaluated
    n, b = config.critic.num_value_samples, config.eval_batch_size
    v_own = chunk_values(out.value_critic, dataset, before, n, b, seed=config.seed)
    v_all = chunk_values(out.critic, dataset, before, n, b, seed=config.seed)
    np.testing.assert_allclose(out.values["v"], v_own["v"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.values["v_all"], v_all["v"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.values["q"], v_all["q"], rtol=1e-5, atol=1e-6)   # Q: the all-data critic's
    np.testing.assert_allclose(out.values["advantage"], out.values["q"] - out.values["v"], atol=1e-6)
    assert not np.allclose(out.values["v"], out.values["v_all"])

    # through the CLI's path: the checkpoint keeps the V critic, aloe-evaluate gives the iteration's advantages
    result = train_iteration(config, [tmp_path / "bags"], root / "iter0", tmp_path / "iter1")
    assert (result.checkpoint_dir / "critic" / VALUE_CRITIC_DIR / "critic.safetensors").is_file()
    assert evaluate_main([str(tmp_path / "bags"), "--critic", str(result.checkpoint_dir), "--out",
                          str(tmp_path / "eval"), "--no-plots"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "eval" / "values.csv")))
    q_critic, policy, _ = load_critic(result.checkpoint_dir)
    saved = chunk_values(load_value_critic(result.checkpoint_dir, policy), dataset, policy, seed=0)
    saved_all = chunk_values(q_critic, dataset, policy, seed=0)
    np.testing.assert_allclose([float(r["v"]) for r in rows], saved["v"], atol=1e-4)
    np.testing.assert_allclose([float(r["q"]) for r in rows], saved_all["q"], atol=1e-4)
    np.testing.assert_allclose([float(r["advantage"]) for r in rows], saved_all["q"] - saved["v"], atol=1e-4)
    assert not np.allclose(saved["v"], saved_all["v"], atol=1e-4)

    # the bags of another policy: nothing of iter0's own to fit V on
    config.ingestion.cache_dir = str(tmp_path / "cache_other")
    other = TransitionDataset(ingest_bags([root / "bags"], config.ingestion).episodes, 4, 0.99)
    out = run_iteration(config, other, FlowMatchingPolicy.from_pretrained(root / "iter0"))
    assert out.value_critic is None and "v_all" not in out.values and "critic_value" not in out.curves
    assert out.advantage_stats["value_data"]["value_data"] == "all"
    assert "fewer than" in out.advantage_stats["value_data"]["reason"]


def test_value_data_is_checked_and_legacy_critics_load_with_all():
    from aloe_critic.critic import CriticConfig

    with pytest.raises(ValueError, match="value_data"):
        CriticConfig(value_data="everything")
    assert CriticConfig.from_saved({"ensemble_size": 3}).value_data == "all"
