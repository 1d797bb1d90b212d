"""Tests of the OPE benchmark's analysis helpers (run: ``pytest bench/test_ope_accuracy.py``)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ope_accuracy  # noqa: E402
from ope_accuracy import advantage_error, per_group, slope  # noqa: E402


def _rows(q, v):
    return [{"q_true": float(a), "v_true": float(b)} for a, b in zip(q, v)]


def test_equal_q_and_v_errors_at_a_state_cancel_in_the_advantage():
    rng = np.random.default_rng(0)
    q, v = rng.uniform(0, 1, 20), rng.uniform(0, 1, 20)
    shift = rng.normal(0, 0.2, 20)  # one error per state, shared by Q and V
    est = {"q": q + shift, "v": v + shift, "advantage": (q + shift) - (v + shift)}
    e = advantage_error(est, _rows(q, v))
    assert e["adv_rmse"] == pytest.approx(0.0, abs=1e-12)
    assert e["q_v_error_corr"] == pytest.approx(1.0)
    assert e["q_error_rms"] == pytest.approx(e["v_error_rms"]) and e["q_error_rms"] > 0.1


def test_the_decomposition_adds_up_and_a_constant_advantage_scores_one_true_std():
    q = np.array([0.9, 0.2, 0.6, 0.4])
    v = np.array([0.5, 0.5, 0.5, 0.5])
    a_true = q - v
    est = {"q": np.array([0.8, 0.3, 0.6, 0.5]), "v": np.array([0.6, 0.4, 0.5, 0.45])}
    est["advantage"] = est["q"] - est["v"]
    e = advantage_error(est, _rows(q, v))
    eq, ev = est["q"] - q, est["v"] - v
    assert e["adv_rmse"] ** 2 == pytest.approx(e["q_error_rms"] ** 2 + e["v_error_rms"] ** 2 - 2 * np.mean(eq * ev))
    flat = {**est, "advantage": np.full(4, a_true.mean())}  # the right mean, no information per state
    assert advantage_error(flat, _rows(q, v))["over_true_std"] == pytest.approx(1.0)


def test_per_group_scores_the_advantage_and_its_slope_per_data_source():
    rng = np.random.default_rng(1)
    groups = [g for g in ope_accuracy.GROUPS for _ in range(6)]
    q, v = rng.uniform(0, 1, len(groups)), rng.uniform(0, 1, len(groups))
    rows = [{"q_true": float(a), "v_true": float(b), "group": g} for a, b, g in zip(q, v, groups)]
    exact = {"q": q, "v": v, "advantage": q - v}
    half = {"q": q, "v": v, "advantage": 0.5 * (q - v)}       # the true advantage shrunk to half its scale
    blind = {"q": q, "v": q, "advantage": np.zeros_like(q)}    # V copies Q: the advantage is gone
    for g in ope_accuracy.GROUPS:
        assert per_group(exact, rows)[g]["adv_slope"] == pytest.approx(1.0)
        assert per_group(exact, rows)[g]["adv_rmse"] == pytest.approx(0.0, abs=1e-12)
        assert per_group(half, rows)[g]["adv_slope"] == pytest.approx(0.5)
        assert per_group(blind, rows)[g]["adv_slope"] == pytest.approx(0.0, abs=1e-12)
    assert np.isnan(slope(np.ones(4), np.arange(4.0)))           # no spread in the truth: no slope


def test_report_prints_the_tables_and_redraws_the_plot_only_when_asked(tmp_path, capsys):
    import shutil

    run = tmp_path / "run.json"
    shutil.copy(Path(__file__).resolve().parent / "results" / "ope_value_data" / "ope_H10_vcur_s4.json", run)
    assert ope_accuracy.main(["--report", str(run)]) == 0
    out = capsys.readouterr().out
    assert "| aloe[vcur] |" in out and "The advantage by the data source" in out
    assert not run.with_suffix(".png").exists()
    assert ope_accuracy.main(["--report", str(run), "--plot"]) == 0
    assert run.with_suffix(".png").stat().st_size > 10_000


def _buffer(seed: int, rng, scale: float, v_shift: float, spread_tracks: bool) -> dict:
    """A run's JSON on one buffer: progress's Q errors, aloe's the same times ``scale``; aloe's V off by
    ``v_shift`` at pi's states; its ensemble std at pi's chunks ranked like its |error| there, or against it."""
    groups = [g for g in ope_accuracy.GROUPS for _ in range(6)]
    n = len(groups)
    q, v, q_pi = rng.uniform(0, 1, n), rng.uniform(0, 1, n), rng.uniform(0, 1, n)
    err = rng.normal(0, 0.2, n)
    err_pi = rng.uniform(0.01, 0.3, n)
    own = np.array([g == "pi" for g in groups])
    rows = [{"q_true": float(a), "v_true": float(b), "q_pi_true": float(c), "group": g}
            for a, b, c, g in zip(q, v, q_pi, groups)]
    est = {"q": q + scale * err, "v": v + np.where(own, v_shift, 0.3), "q_pi": q_pi + err_pi,
           "q_pi_std": err_pi if spread_tracks else 0.31 - err_pi}
    head = {"critic_seed": seed, "K": 10, "aggregate": "subset_min"}
    return {"args": {"seed": seed, "main_k": 10}, "rows": rows,
            "runs": [{**head, "method": "aloe", "estimates": {k: x.tolist() for k, x in est.items()}},
                     {**head, "method": "progress", "estimates": {"q": (q + err).tolist()}},
                     {**head, "critic_seed": seed + 1, "method": "aloe", "estimates": {"q": q.tolist()}}]}


def test_pool_scores_each_buffer_and_all_their_states_against_the_targets(tmp_path, capsys):
    rng = np.random.default_rng(2)
    good = _buffer(3, rng, 0.4, 0.02, True)      # Q error 0.4x progress's everywhere, small V bias, spread tracks
    bad = _buffer(4, rng, 0.6, 0.12, False)      # 0.6x, V over-valued at pi's states, spread against the error
    out = ope_accuracy.pool([good, bad])
    b3, b4 = out["buffers"]
    assert b3["q_rmse_ratio"] == pytest.approx(0.4) and b3["q_rmse_ratio_ci"] == pytest.approx([0.4, 0.4])
    assert b3["met"] == {"q_rmse_ratio": True, "v_bias": True, "spread_spearman": True}
    assert b3["spread_spearman"] == pytest.approx(1.0) and b4["spread_spearman"] == pytest.approx(-1.0)
    assert b4["v_bias_pi_states"] == pytest.approx(0.12) and b4["met"] == {"q_rmse_ratio": False, "v_bias": False,
                                                                            "spread_spearman": False}
    p = out["pooled"]                            # every state of both buffers: between the two, by their errors
    assert 0.4 < p["q_rmse_ratio"] < 0.6 and p["q_rmse_ratio_ci"][0] < p["q_rmse_ratio"] < p["q_rmse_ratio_ci"][1]
    assert p["v_bias_pi_states"] == pytest.approx(0.07) and p["spread_spearman"] == pytest.approx(0.0)
    by = p["q_rmse_by_group"]                    # per data source: aloe's error is 0.4x / 0.6x of progress's
    assert set(by) == set(ope_accuracy.GROUPS)
    for g, x in by.items():
        assert 0.4 * x["progress"] - 1e-9 <= x["aloe"] <= 0.6 * x["progress"] + 1e-9
    with pytest.raises(ValueError, match="one run per buffer"):
        ope_accuracy.pool([good, good])
    no_progress = {**bad, "runs": [r for r in bad["runs"] if r["method"] != "progress"]}
    with pytest.raises(ValueError, match=r"no headline \['progress'\]"):
        ope_accuracy.pool([good, no_progress])
    files = []
    for res in (good, bad):
        files.append(tmp_path / f"s{res['args']['seed']}.json")
        files[-1].write_text(json.dumps(res))
    assert ope_accuracy.main(["--pool", *map(str, files)]) == 0
    table = capsys.readouterr().out
    assert "| 3 | " in table and "| pooled | " in table and "q_rmse_ratio, v_bias, spread_spearman |" in table


def test_pool_pairs_a_refit_with_the_whole_buffer_on_the_same_resampled_states():
    rng = np.random.default_rng(3)
    runs = [_buffer(s, rng, 0.5, 0.0, True) for s in (2, 3)]
    for res in runs:  # a refit " (pi 0)" whose aloe errs twice as much as on the whole buffer, progress alike
        whole = {r["method"]: r for r in res["runs"] if r["critic_seed"] == res["args"]["seed"]}
        err = np.array(whole["aloe"]["estimates"]["q"]) - np.array([r["q_true"] for r in res["rows"]])
        refit = {**whole["aloe"], "method": "aloe (pi 0)",
                 "estimates": {**whole["aloe"]["estimates"],
                               "q": (np.array([r["q_true"] for r in res["rows"]]) + 2 * err).tolist()}}
        res["runs"] += [refit, {**whole["progress"], "method": "progress (pi 0)"}, {**refit, "method": "aloe[x]"}]
    out = ope_accuracy.pool(runs, view=" (pi 0)", against="")
    assert out["pooled"]["q_rmse_ratio"] == pytest.approx(1.0)
    d = out["difference"]
    assert d["against"] == "" and d["q_rmse_ratio"] == pytest.approx(0.5)
    assert d["q_rmse_ratio_ci"] == pytest.approx([0.5, 0.5])  # paired: the same states in both, every resample
    variant = ope_accuracy.pool(runs, critic="aloe[x]", against="", against_critic="aloe")  # two critics, one fit
    assert variant["pooled"]["q_rmse_ratio"] == pytest.approx(1.0)
    assert variant["difference"]["q_rmse_ratio"] == pytest.approx(0.5)
    assert variant["difference"]["q_rmse_ratio_ci"] == pytest.approx([0.5, 0.5])
    assert "Critic aloe[x] (as 'aloe' below)" in ope_accuracy.pool_markdown(variant)
    for res in runs:  # a progress variant that errs twice as much: aloe[x] against it is 1.0 / 2 = 0.5x
        truth = np.array([r["q_true"] for r in res["rows"]])
        progress = next(r for r in res["runs"] if r["method"] == "progress")
        doubled = truth + 2 * (np.array(progress["estimates"]["q"]) - truth)
        res["runs"].append({**progress, "method": "progress[x]", "estimates": {"q": doubled.tolist()}})
    both = ope_accuracy.pool(runs, critic="aloe[x]", baseline="progress[x]", against="", against_critic="aloe",
                             against_baseline="progress")
    assert both["pooled"]["q_rmse_ratio"] == pytest.approx(0.5) and both["baseline"] == "progress[x]"
    assert both["difference"]["q_rmse_ratio"] == pytest.approx(0.0)  # 0.5x against 0.5x
    assert "against progress[x] (as 'progress')" in ope_accuracy.pool_markdown(both)
    with pytest.raises(ValueError, match=r"no headline \['aloe \(pi 5\)', 'progress \(pi 5\)'\]"):
        ope_accuracy.pool(runs, view=" (pi 5)")


def test_pi_coverage_view_keeps_n_of_pis_episodes_and_everything_else():
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_training_device import synthetic_episodes

    from aloe_critic.dataset import TransitionDataset

    episodes = synthetic_episodes(8, 12, 8, 5, 3, seed=0)
    groups = ["demo", "pi", "old_weak", "pi", "pi", "demo", "pi", "old_weak"]
    ds = TransitionDataset(episodes, 4, 0.99)
    for keep in (0, 2, 4, 9):
        view = ope_accuracy.pi_coverage_view(ds, groups, keep, seed=1, log=lambda m: None)
        kept = set(np.unique(view.tick_episode[view.indices]).tolist())
        assert {i for i, g in enumerate(groups) if g != "pi"} <= kept
        assert len([i for i in kept if groups[i] == "pi"]) == min(keep, 4)
    again = ope_accuracy.pi_coverage_view(ds, groups, 2, seed=1, log=lambda m: None)
    assert np.array_equal(again.indices, ope_accuracy.pi_coverage_view(ds, groups, 2, seed=1, log=print).indices)


def test_a_variant_is_an_aloe_critic_unless_it_names_a_baseline_method():
    assert ope_accuracy.parse_variant("ln=critic_norm=layer") == ("aloe", "ln", {"critic_norm": "layer"})
    assert ope_accuracy.parse_variant("hl=method=progress,value_loss=hl_gauss,value_bins=41") == (
        "progress", "hl", {"value_loss": "hl_gauss", "value_bins": 41})
    with pytest.raises(SystemExit, match="method must be aloe"):
        ope_accuracy.parse_variant("x=method=dagger")


def test_run_buffer_gives_a_runs_transitions_and_refuses_another_buffers_cache(tmp_path):
    import pickle

    from aloe_data.ingestion import Episode

    episodes = [Episode.from_arrays(actions=[[0.0]] * n, proprio=[[0.0]] * n, rewards=[0.0] * (n - 1) + [1.0],
                                    outcome="SUCCESS") for n in (5, 4)]
    rows = [{"episode": 1, "tick": 2}, {"episode": 0, "tick": 3}]
    (tmp_path / "buffer.pkl").write_bytes(pickle.dumps({"episodes": episodes, "rows": rows}))
    run = {"args": {"seed": 7, "horizon": 2, "gamma": 0.9}, "rows": rows}
    data, dataset, ids = ope_accuracy.run_buffer(run, tmp_path)
    assert len(data["episodes"]) == 2 and dataset.chunk_horizon == 2 and dataset.gamma == 0.9
    assert ids.tolist() == [5 + 2, 3]                            # episode 1 starts after episode 0's 5 ticks
    with pytest.raises(SystemExit, match="not the buffer of the run of OPE seed 7"):
        ope_accuracy.run_buffer({**run, "rows": rows[::-1]}, tmp_path)
