"""The main job, shortened: every node a real process, bags -> training -> hot reload -> report."""

import json
from pathlib import Path

import numpy as np
import pytest
from rosbags.highlevel import AnyReader

from aloe_policy.model import validate_checkpoint
from aloe_bringup.loop import build_parser, config_from_args, LoopRunner
from aloe_data.bag_layout import make_typestore

pytestmark = [pytest.mark.system, pytest.mark.slow]


def chunk_policy_ids(bag: Path) -> set[str]:
    with AnyReader([bag], default_typestore=make_typestore()) as reader:
        conns = [c for c in reader.connections if c.topic == "/aloe/action_chunk"]
        return {reader.deserialize(raw, c.msgtype).policy_id for c, _, raw in reader.messages(connections=conns)}


def seen_ids(phase: Path) -> set[str]:
    return set().union(*(chunk_policy_ids(b) for b in phase.iterdir()))


def test_short_loop_produces_consistent_bags_checkpoints_hot_reloads_and_report(tmp_path):
    args = build_parser().parse_args(["--quick", "--run-dir", str(tmp_path / "run"), "--torch-threads", "1"])
    config = config_from_args(args)
    runner = LoopRunner(config)
    rows = runner.run()
    run = tmp_path / "run"

    # bags: one per episode, every phase complete, each readable
    assert len(list((run / "bags" / "demos").iterdir())) == config.demo_episodes
    for phase, count in (("eval_01", config.eval_episodes), ("iter_01", config.episodes_per_iteration),
                         ("eval_02", config.eval_episodes), ("iter_02", config.episodes_per_iteration)):
        bags = sorted((run / "bags" / phase).iterdir())
        assert len(bags) == count, f"{phase}: {bags}"
        # the loop followed the phase on the episode-event topic (not in node logs): every end seen
        assert sum(runner.phase_events[phase].values()) == count, runner.phase_events
        for bag in bags:
            assert (bag / "metadata.yaml").is_file()

    # checkpoints: valid, distinct, each trained from the previous one
    ids = []
    for it in ("iter_00", "iter_01"):
        ok, message = validate_checkpoint(run / "checkpoints" / it)
        assert ok, message
        manifest = json.loads((run / "checkpoints" / it / "data_manifest.json").read_text())
        ids.append(manifest["policy_out"])
    assert ids[0] != ids[1]
    assert json.loads((run / "checkpoints" / "iter_01" / "data_manifest.json").read_text())["policy_in"] == ids[0]
    assert (run / "checkpoints" / "iter_01" / "critic").is_dir()
    # the policy-alone (eval) episodes trained the critic but were not imitated
    manifest = json.loads((run / "checkpoints" / "iter_01" / "data_manifest.json").read_text())
    eval_ticks = sum(b["ticks"] for b in manifest["bags"] if "/eval_" in b["bag"])
    assert eval_ticks > 0
    assert manifest["advantage_stats"]["imitated_chunks"] == manifest["counts"]["transitions"] - eval_ticks

    # hot reload: the chunks recorded in each phase come from the policy loaded before it
    for phase, policy_id in (("eval_01", ids[0]), ("iter_01", ids[0]), ("eval_02", ids[1]), ("iter_02", ids[1])):
        seen = set().union(*(chunk_policy_ids(b) for b in (run / "bags" / phase).iterdir()))
        assert seen <= {policy_id} and seen, f"{phase} ran chunks of {seen}, expected {policy_id}"

    # the baseline (Dagger) trained on the same bags, evaluated on the same episodes, its rollouts not training data
    dagger_bags = sorted((run / "bags" / "dagger_eval_02").iterdir())
    assert len(dagger_bags) == config.eval_episodes and (run / "checkpoints" / "dagger_01").is_dir()
    dagger_manifest = json.loads((run / "checkpoints" / "dagger_01" / "data_manifest.json").read_text())
    assert dagger_manifest["policy_in"] == ids[0] and dagger_manifest["method"] == "dagger"
    assert not any("dagger_eval" in b["bag"] for b in manifest["bags"] + dagger_manifest["bags"])
    assert seen_ids(run / "bags" / "dagger_eval_02") == {dagger_manifest["policy_out"]}
    assert rows[0]["baseline_success_rate"] == rows[0]["success_rate"], "iteration 0: the same initial policy"
    assert 0.0 <= rows[1]["baseline_success_rate"] <= 1.0 and rows[1]["baseline_eval_episodes"] == config.eval_episodes

    # metrics and report agree with the bags
    assert [r["policy_id"] for r in rows] == ids
    assert all(r["episodes"] == config.episodes_per_iteration for r in rows)
    assert all(0.0 <= r["intervention_rate"] <= 1.0 and 0.0 <= r["success_rate"] <= 1.0 for r in rows)
    assert np.isfinite(rows[0]["critic_loss"])
    assert all(r["eval_episodes"] == config.eval_episodes for r in rows)
    shares = [r[k] for r in rows for k in ("adv_pos_success", "adv_pos_failure", "adv_pos_operator") if k in r]
    assert "adv_pos_operator" in rows[0] and all(0.0 <= v <= 1.0 for v in shares)
    assert json.loads((run / "metrics.json").read_text()) == rows
    html = (run / "report.html").read_text()
    assert ids[0] in html and ids[1] in html and (run / "metrics.png").stat().st_size > 1000
    # the critic's values along every episode, per phase, linked from the report
    plots = sorted((run / "checkpoints" / "iter_01" / "values").glob("*/values_*.png"))
    assert {p.parent.name for p in plots} == {"demos", "eval_01", "iter_01"} and len(plots) == len(
        [b for phase in ("demos", "eval_01", "iter_01") for b in (run / "bags" / phase).iterdir()])
    assert 'href="checkpoints/iter_01/values/eval_01/"' in html

    # the README's next steps on the loop's own output: bags are found at any depth under bags/
    import subprocess

    evaluated = subprocess.run(["aloe-evaluate", str(run / "bags"), "--critic", str(run / "checkpoints" / "iter_01"),
                                "--out", str(tmp_path / "eval"), "--no-plots"], capture_output=True, text=True,
                               timeout=600)
    assert evaluated.returncode == 0, evaluated.stdout[-2000:] + evaluated.stderr[-2000:]
    n_bags = sum(1 for _ in (run / "bags").glob("*/*/metadata.yaml"))
    scored = (tmp_path / "eval" / "values.csv").read_text().splitlines()
    assert len({line.split(",")[0] for line in scored[1:]}) == n_bags, "every bag of the run was scored"
    trained = subprocess.run(["aloe-train", "--bags", str(run / "bags"), "--policy-in",
                              str(run / "checkpoints" / "iter_01"), "--out", str(tmp_path / "bc_02"), "--method",
                              "bc", "--policy-steps", "2", "--cache-dir", str(run / "cache"), "--no-progress"],
                             capture_output=True, text=True, timeout=600)
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-2000:]
    assert f"from {n_bags} bags" in trained.stdout
