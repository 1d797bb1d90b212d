"""The loop report: a table with plain column names, units and a legend, bag-folder links per
policy, confidence intervals, plots from zero; the terminal table's headers in full."""

import html
import re

from aloe_bringup.loop import print_table
from aloe_bringup.report import LEGEND, write_report

ROWS = [{"iteration": 0, "policy_id": "abcdef0123456789", "success_rate": 0.35, "eval_episodes": 20,
         "baseline_success_rate": 0.35, "baseline_eval_episodes": 20,
         "assisted_success_rate": 1.0, "no_takeover_success_rate": 0.1, "intervention_rate": 0.36,
         "takeovers_per_episode": 1.1, "mean_episode_length": 31.7, "critic_loss": 0.0017, "adv_pos_success": 0.45,
         "adv_pos_failure": 0.3, "adv_pos_operator": 0.6, "train_s": 120.0, "wall_s": 200.0},
        {"iteration": 1, "policy_id": "0123456789abcdef", "success_rate": 0.75, "eval_episodes": 20,
         "baseline_success_rate": 0.6, "baseline_eval_episodes": 20,
         "assisted_success_rate": 1.0, "no_takeover_success_rate": 0.3, "intervention_rate": 0.28,
         "takeovers_per_episode": 0.9, "mean_episode_length": 30.0, "wall_s": 100.0}]


def test_report_table_has_plain_columns_a_legend_intervals_and_bag_links(tmp_path):
    (tmp_path / "bags" / "eval_01").mkdir(parents=True)
    for phase in ("demos", "eval_01", "iter_01"):  # what aloe-train --value-plots writes per checkpoint
        (tmp_path / "checkpoints" / "iter_01" / "values" / phase).mkdir(parents=True)
    page = write_report(tmp_path, ROWS, {"method": "aloe", "compare_with": "dagger"}, 600.0).read_text()
    headers = [html.unescape(h) for h in re.findall(r"<th>([^<]+)<br>", page)]
    assert headers == [h for h, _, _ in LEGEND]
    assert len(headers) <= 10 and not any("_" in h for h in headers), "plain names, not field names"
    for _, _, text in LEGEND:
        assert html.escape(text) in page  # every column explained
    assert "0.35 [0.18, 0.57] (20)" in page  # the Wilson interval of 7 / 20
    assert "0.60 [0.39, 0.78] (20)" in page and "baseline <b>dagger</b>" in page  # the baseline on the same bags
    assert "0.36 (1.1)" in page  # intervention rate (takeovers per episode)
    assert 'href="bags/eval_01/"' in page and 'href="bags/iter_02/"' in page  # policy k -> bags of phase k + 1
    assert "<td>0.0017</td>" in page and "0.45 / 0.30 / 0.60" in page
    assert 'href="checkpoints/iter_01/values/eval_01/"' in page and "the value of policy 0" in page
    assert '<img src="metrics.png"' in page and (tmp_path / "metrics.png").stat().st_size > 1000


def test_terminal_table_headers_are_not_cut(capsys):
    print_table(ROWS)
    out = capsys.readouterr().out
    assert "success supervised" in out and "critic TD loss" in out and "0.0017" in out
    assert "baseline alone" in out
