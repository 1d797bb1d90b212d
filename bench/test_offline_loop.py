"""bench/offline_loop.py runs the main job's learning loop end to end (tiny sizes), and
--eval-critic-only keeps the policy-alone episodes out of the imitated chunks."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import offline_loop  # noqa: E402

TINY = ["--demos", "1", "--iterations", "1", "--episodes", "1", "--eval", "2", "--init-steps", "3",
        "--policy-steps", "3", "--critic-steps", "3", "--max-steps", "12", "--image-size", "32",
        "--train", "ensemble_size=2", "--train", "num_policy_samples=2"]


def run_outcome(run) -> list[tuple]:
    """What makes two runs the same run, per iteration: the policy id (the trained weights), every
    episode's outcome and length in each phase, the imitated chunks (``run``: rows or a run's JSON)."""
    rows = json.loads(Path(run).read_text())["rows"] if isinstance(run, (str, Path)) else run
    return [(r["policy_id"], r["eval_success"], r["eval_steps"], r["assisted_steps"], r.get("rollout_steps"),
             r.get("vg_eval_steps"), r.get("imitated_chunks")) for r in rows]


@pytest.mark.slow
def test_offline_loop_runs_and_critic_only_episodes_are_not_imitated(tmp_path):
    out = tmp_path / "aloe.json"
    assert offline_loop.main(TINY + ["--eval-critic-only", "--save-init", str(tmp_path / "init"),
                                     "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["iteration"] for r in rows] == [0, 1] and rows[0]["policy_id"] != rows[1]["policy_id"]
    assert len(rows[0]["eval_success"]) == 2 and 0.0 <= rows[1]["success_rate"] <= 1.0
    # transitions = ticks: 1 demo + 2 eval + 1 supervised episode; imitated: all but the 2 eval episodes
    demo_and_supervised = rows[0]["imitated_chunks"]
    assert 0 < demo_and_supervised < 12 * 4

    both = tmp_path / "all.json"  # (and V from the policy's own chunks: its 2 eval episodes and 1 supervised)
    assert offline_loop.main(TINY + ["--load-init", str(tmp_path / "init"), "--train", "value_data=current",
                                     "--out", str(both)]) == 0
    again = json.loads(both.read_text())["rows"]
    assert again[0]["policy_id"] == rows[0]["policy_id"]  # the same initial policy
    assert again[0]["imitated_chunks"] > demo_and_supervised  # eval episodes imitated too
    assert again[0]["value_data"]["value_data"] == "current" and again[0]["value_data"]["episodes"] >= 2
    assert "value_data" not in rows[0]


@pytest.mark.slow
def test_rollouts_are_imitable_training_episodes_on_positions_of_their_own(tmp_path):
    init, cache = str(tmp_path / "init"), str(tmp_path / "first_phase")
    plain = tmp_path / "plain.json"
    assert offline_loop.main(TINY + ["--eval-critic-only", "--save-init", init, "--out", str(plain)]) == 0
    runs = {}
    for name, method in (("aloe", "aloe"), ("filtered", "filtered"), ("oracle", "oracle"), ("again", "aloe")):
        out = tmp_path / f"{name}.json"
        assert offline_loop.main(TINY + ["--eval-critic-only", "--load-init", init, "--method", method, "--rollouts",
                                         "2", "--first-phase-cache", cache, "--out", str(out)]) == 0
        runs[name] = json.loads(out.read_text())["rows"]
    plain_rows = json.loads(plain.read_text())["rows"]
    first = runs["aloe"][0]
    assert first["eval_success"] == plain_rows[0]["eval_success"]  # the evaluation is unchanged by rollouts
    assert len(first["rollout_success"]) == 2 and "rollout_success" not in runs["aloe"][1]  # none at the end
    assert first["imitated_chunks"] > plain_rows[0]["imitated_chunks"]  # the rollouts' chunks are imitable
    assert run_outcome(runs["again"]) == run_outcome(runs["aloe"])  # the cached first phase (with its rollouts) reproduces it
    assert len(list(Path(cache).glob("*_o2.pkl"))) == 1
    # the outcome-filtered reference imitates no evaluation episode: at most the imitable chunks
    assert runs["filtered"][0]["imitated_chunks"] <= first["imitated_chunks"]
    # the oracle (skilled operator: no bad correction) imitates Dagger's set: none of the rollouts' chunks
    assert 0 < runs["oracle"][0]["imitated_chunks"] <= plain_rows[0]["imitated_chunks"] < first["imitated_chunks"]

    # Dagger imitates no chunk of the policy's: with rollouts it trains exactly as without them
    daggers = []
    for extra in ([], ["--rollouts", "2", "--first-phase-cache", cache]):
        out = tmp_path / f"dagger{len(extra)}.json"
        assert offline_loop.main(TINY + ["--eval-critic-only", "--load-init", init, "--method", "dagger", *extra,
                                         "--out", str(out)]) == 0
        daggers.append(run_outcome(out))
    assert [row[:4] for row in daggers[0]] == [row[:4] for row in daggers[1]]


@pytest.mark.slow
def test_random_control_imitates_a_share_of_the_imitable_chunks_only(tmp_path):
    init = tmp_path / "init"
    assert offline_loop.main(TINY + ["--eval-critic-only", "--method", "bc", "--save-init", str(init),
                                     "--out", str(tmp_path / "bc.json")]) == 0
    aloe = tmp_path / "aloe.json"
    assert offline_loop.main(TINY + ["--eval-critic-only", "--load-init", str(init), "--out", str(aloe)]) == 0
    imitable = json.loads(aloe.read_text())["rows"][0]["imitated_chunks"]  # demo + supervised chunks
    assert json.loads(aloe.read_text())["args"]["weight_mode"] == "exp"  # the main job's default, recorded
    counts = {}
    for fraction in (0.0001, 0.5, 1.0):
        out = tmp_path / f"random{fraction}.json"
        assert offline_loop.main(TINY + ["--eval-critic-only", "--load-init", str(init), "--method", "random",
                                         "--keep-fraction", str(fraction), "--out", str(out)]) == 0
        result = json.loads(out.read_text())
        counts[fraction] = result["rows"][0]["imitated_chunks"]
        assert result["args"]["weight_mode"] == "binary"  # a 0/1 mask, recorded for the summary's label
    assert counts[1.0] == imitable and counts[0.0001] == 0 and 0 <= counts[0.5] <= imitable


@pytest.mark.slow
def test_a_run_from_the_cached_first_phase_equals_one_that_collects_it(tmp_path):
    cache, init = tmp_path / "first_phase", str(tmp_path / "init")
    collected = tmp_path / "collected.json"
    assert offline_loop.main(TINY + ["--eval-critic-only", "--save-init", init, "--out", str(collected)]) == 0
    outs = [tmp_path / "writes.json", tmp_path / "reads.json"]
    for out in outs:  # the first run collects iteration 0 and writes the cache, the second reads it
        assert offline_loop.main(TINY + ["--eval-critic-only", "--load-init", init, "--first-phase-cache",
                                         str(cache), "--out", str(out)]) == 0
    assert len(list(cache.glob("*.pkl"))) == 1

    assert run_outcome(collected) == run_outcome(outs[0]) == run_outcome(outs[1])


def test_the_critic_is_scored_on_telling_bad_corrections_from_good_ones():
    import numpy as np

    from aloe_critic.dataset import TransitionDataset
    from aloe_data.ingestion import Episode
    from aloe_data.schema import SOURCE_HUMAN as H, SOURCE_POLICY as P
    from aloe_sim.offline import EpisodeStats

    demo = Episode.from_arrays([[0.0]] * 3, [[0.0]] * 3, [0, 0, 1], sources=[H] * 3)
    # policy, correction 1 (ticks 1-2), policy, correction 2 (ticks 4-5)
    supervised = Episode.from_arrays([[0.0]] * 6, [[0.0]] * 6, [0] * 5 + [1], sources=[P, H, H, P, H, H])
    dataset = TransitionDataset([demo, supervised], chunk_horizon=2, gamma=0.9)
    stats = EpisodeStats(True, 6, 4, 2, 0, correction_bad=(True, False))
    rows = dataset.indices
    by_tick = np.array([0.0, -0.2, -0.4, 0.0, 0.3, 0.1])  # the supervised episode's chunks, by start tick
    adv = np.where(dataset.episode[rows] == 1, by_tick[dataset.tick_in_episode[rows]], 0.0)
    out = offline_loop.correction_diagnostic(dataset, {1: (supervised, stats)}, adv)
    assert (out["corrections_bad"], out["corrections_good"]) == (1, 1)
    assert out["advantage_bad"] == pytest.approx(-0.3) and out["advantage_good"] == pytest.approx(0.2)
    assert out["auc_good_over_bad"] == 1.0 and out["bad_share_of_chunks"] == 0.5
    assert out["bad_share_of_weight_beta0.1"] < 0.01
    unlabelled = EpisodeStats(True, 6, 4, 2, 0)
    assert offline_loop.correction_diagnostic(dataset, {1: (supervised, unlabelled)}, adv) is None
    # the oracle reference keeps Dagger's set without the bad correction's chunks
    keep = offline_loop.oracle_keep(dataset, {1: (supervised, stats)})
    start = dataset.tick_in_episode[rows]
    in_demo, in_supervised = dataset.episode[rows] == 0, dataset.episode[rows] == 1
    assert keep[in_demo].all(), "demonstrations are the operator's"
    # chunks (H = 2) from ticks 0-1 (half the bad correction's), 1-2 (all of it) are dropped, 2-3 (half policy,
    # half bad) too; 3-4 (half the good one's) and 4-5 are kept
    assert not keep[in_supervised & (start <= 2)].any(), "the bad correction (ticks 1-2)"
    assert keep[in_supervised & (start >= 3)].all(), "the good one (ticks 4-5)"
    assert (offline_loop.oracle_keep(dataset, {1: (supervised, unlabelled)})
            == (dataset.source_fraction[rows][:, H] >= 0.5)).all(), "no labels: Dagger's set"


@pytest.mark.slow
def test_a_run_killed_after_an_iteration_resumes_there_and_equals_an_unbroken_one(tmp_path):
    """A real process, started as the study runner starts it, killed with SIGKILL once its first iteration's
    state is written; the same command again resumes after iteration 0 and ends where an unbroken run does."""
    import os
    import signal
    import subprocess
    import time

    init = str(tmp_path / "init")
    args = TINY + ["--iterations", "2", "--eval-critic-only", "--method", "aloe", "--rollouts", "1", "--operator",
                   "mixed", "--value-guided", "2"]
    unbroken = tmp_path / "unbroken.json"
    assert offline_loop.main(args + ["--save-init", init, "--out", str(unbroken)]) == 0
    state, out = tmp_path / "run.state", tmp_path / "resumed.json"
    command = [sys.executable, str(Path(offline_loop.__file__)), *args, "--load-init", init, "--state", str(state),
               "--out", str(out)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not (state / "state.json").is_file():
        assert proc.poll() is None and time.monotonic() < deadline, "no state after iteration 0"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(json.loads(out.read_text())["rows"]) < 3, "killed before the run ended"
    assert json.loads((state / "state.json").read_text())["next_iteration"] == 1

    # the state belongs to this command: other arguments are refused, the state kept
    other = subprocess.run([*command, "--policy-steps", "4"], capture_output=True, text=True)
    assert other.returncode != 0 and "other arguments (policy_steps)" in other.stderr and state.is_dir()
    # and to these numerics: the same command with torch's kernels pinned otherwise is refused too
    pinned = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "ATEN_CPU_CAPABILITY": "default"})
    assert pinned.returncode != 0 and "made under other numerics" in pinned.stderr and state.is_dir()
    assert "ALOE_PORTABLE_NUMERICS" in pinned.stderr
    # a damaged state is refused with what to do, not a traceback
    import shutil
    damaged = tmp_path / "damaged.state"
    shutil.copytree(state, damaged)
    (damaged / "episodes_00.pkl").write_bytes((damaged / "episodes_00.pkl").read_bytes()[:100])
    broken = subprocess.run([*command[:-4], "--state", str(damaged), "--out", str(tmp_path / "damaged.json")],
                            capture_output=True, text=True)
    assert broken.returncode != 0 and "is unreadable" in broken.stderr and "remove the folder" in broken.stderr
    assert "Traceback" not in broken.stderr

    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "resumed from" in again.stdout and "after iteration 0" in again.stdout
    assert not state.exists(), "the state is removed once the run has finished"

    assert run_outcome(out) == run_outcome(unbroken)
    assert json.loads(out.read_text())["numerics"] == offline_loop.numerics()  # recorded with the rows
    assert run_outcome(out)[2][5] is not None, "value-guided evaluation at the resumed iterations too"
