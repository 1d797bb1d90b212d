"""The loop report: Wilson intervals of the success rate, table and plots from metrics rows."""

import math

import pytest

from aloe_sim.report import wilson_interval, write_report


def test_wilson_interval_matches_known_values():
    lo, hi = wilson_interval(10, 20)
    assert (round(lo, 3), round(hi, 3)) == (0.299, 0.701)
    lo, hi = wilson_interval(0, 20)
    assert lo == pytest.approx(0.0, abs=1e-12) and round(hi, 3) == 0.161
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_report_writes_table_plot_and_tolerates_missing_columns(tmp_path):
    rows = [{"iteration": 0, "policy_id": "aaaa", "success_rate": 0.25, "eval_episodes": 20, "critic_loss": 0.01,
             "adv_pos_success": 0.6, "adv_pos_failure": 0.2, "adv_pos_operator": 0.7},
            {"iteration": 1, "policy_id": "bbbb", "success_rate": 0.5}]  # the last row: no training columns
    page = write_report(tmp_path, rows, {"seed": 0}, 60.0).read_text()
    assert "aaaa" in page and "bbbb" in page and "adv_pos_failure" in page and "<td>0.200</td>" in page
    assert (tmp_path / "metrics.png").stat().st_size > 1000
