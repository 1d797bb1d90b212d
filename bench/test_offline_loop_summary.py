"""bench/offline_loop_summary.py: per-seed table, mean gain, the paired sign test and the plot."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import offline_loop_summary as summary_mod  # noqa: E402


def write_run(path: Path, method: str, seed: int, episodes: list[list[bool]], critic_only: bool = True,
              train: tuple = ()) -> Path:
    rows = [{"iteration": i, "success_rate": sum(e) / len(e), "eval_success": e} for i, e in enumerate(episodes)]
    path.write_text(json.dumps({"args": {"method": method, "seed": seed, "eval_critic_only": critic_only,
                                         "train": list(train)}, "rows": rows}))
    return path


def test_sign_test_matches_the_exact_binomial():
    assert summary_mod.sign_test(0, 0) == 1.0
    assert summary_mod.sign_test(5, 0) == pytest.approx(2 / 32)      # 2 * 0.5**5
    assert summary_mod.sign_test(0, 5) == pytest.approx(2 / 32)      # two-sided: symmetric
    assert summary_mod.sign_test(3, 3) == 1.0
    assert summary_mod.sign_test(8, 2) == pytest.approx(2 * (1 + 10 + 45) / 1024)


def test_summary_pairs_episodes_of_the_same_seed_and_reports_mean_gain(tmp_path):
    T, F = True, False
    files = [
        write_run(tmp_path / "a0.json", "aloe", 0, [[F, F, T, F], [T, T, T, F]]),
        write_run(tmp_path / "b0.json", "bc", 0, [[F, F, T, F], [T, F, T, F]]),
        write_run(tmp_path / "a1.json", "aloe", 1, [[F, F, F, F], [T, T, F, F]]),
        write_run(tmp_path / "b1.json", "bc", 1, [[F, F, F, F], [F, F, F, T]]),
        write_run(tmp_path / "x1.json", "aloe", 1, [[F, F, F, F], [F, F, F, F]], critic_only=False),
        write_run(tmp_path / "e1.json", "aloe", 1, [[F, F, F, F], [F, F, F, F]], train=["weight_mode=exp"]),
    ]
    runs = summary_mod.load_runs(files)
    assert set(runs) == {"aloe", "bc", "aloe (all data)", "aloe (exp)"}
    assert summary_mod.label({"method": "aloe", "weight_mode": "binary", "train": ["beta=0.2"],
                              "eval_critic_only": True}) == "aloe (binary) [beta=0.2]"
    assert summary_mod.label({"method": "bc", "weight_mode": "exp", "eval_critic_only": True}) == "bc"
    s = summary_mod.summarise(runs, reference="bc")
    assert s["aloe"]["mean"] == [pytest.approx(0.125), pytest.approx(0.625)]
    assert s["aloe"]["mean_gain"] == pytest.approx(0.5) and s["bc"]["mean_gain"] == pytest.approx(0.25)
    # seed 0: aloe better on episode 1; seed 1: better on 0 and 1, worse on 3
    t = s["aloe"]["vs_reference"]
    assert (t["wins"], t["losses"], t["seeds"]) == (3, 1, [0, 1])
    assert t["p_value"] == pytest.approx(summary_mod.sign_test(3, 1))
    assert s["aloe (all data)"]["vs_reference"]["seeds"] == [1] and "vs_reference" not in s["bc"]

    md = summary_mod.markdown(s)
    assert "| **aloe** | mean of 2 | 0.12, 0.62 | **+0.50** |" in md and "| aloe vs bc (seeds 0, 1) | 1 | 3 | 1 |" in md
    out = tmp_path / "plot.png"
    assert summary_mod.main([str(f) for f in files] + ["--plot", str(out), "--json", str(tmp_path / "s.json")]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "s.json").read_text())["aloe"]["vs_reference"]["wins"] == 3

    # a run still going (fewer rows) is compared at the last iteration both reached
    write_run(tmp_path / "b1.json", "bc", 1, [[T, T, T, T]])
    t = summary_mod.summarise(summary_mod.load_runs(files), reference="bc")["aloe"]["vs_reference"]
    assert (t["iteration"], t["wins"], t["losses"]) == (0, 0, 4)  # seed 0: equal; seed 1: bc 4 vs aloe 0


def test_bad_inputs_are_refused_with_the_file_named(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert summary_mod.main([str(bad)]) == 2
    assert "bad.json: not an offline_loop.py result" in capsys.readouterr().err
    a = write_run(tmp_path / "a.json", "aloe", 0, [[True, False]])
    b = write_run(tmp_path / "b.json", "aloe", 0, [[True, True]])
    with pytest.raises(ValueError, match="second 'aloe' run for seed 0"):
        summary_mod.load_runs([a, b])
    c = write_run(tmp_path / "c.json", "bc", 0, [[True, True, False]])  # 3 episodes vs 2
    with pytest.raises(ValueError, match="not paired"):
        summary_mod.summarise(summary_mod.load_runs([a, c]), reference="bc")
