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

    both = tmp_path / "all.json"
    assert offline_loop.main(TINY + ["--load-init", str(tmp_path / "init"), "--out", str(both)]) == 0
    again = json.loads(both.read_text())["rows"]
    assert again[0]["policy_id"] == rows[0]["policy_id"]  # the same initial policy
    assert again[0]["imitated_chunks"] > demo_and_supervised  # eval episodes imitated too
