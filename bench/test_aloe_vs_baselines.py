"""bench/aloe_vs_baselines.py: records per (method, operator, seed, iteration), the paired tests
(success: exact sign test; throughput: paired permutation), the resumable runner's naming, and a
real tiny study run end to end."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aloe_vs_baselines as avb  # noqa: E402


def write_run(root: Path, operator: str, method: str, seed: int, success: list[list[bool]], steps: list[list[int]]):
    name, _, overrides = method.partition(":")
    rows = []
    for i, (s, t) in enumerate(zip(success, steps)):
        rows.append({"iteration": i, "success_rate": float(np.mean(s)), "eval_success": s, "eval_steps": t,
                     "eval_throughput_per_hour": avb.throughput(np.array(s), np.array(t)),
                     "intervention_rate": 0.3 - 0.05 * i, "assisted_success_rate": 1.0,
                     "assisted_throughput_per_hour": 100.0})
    args = {"method": name, "seed": seed, "operator": operator, "train": [o for o in overrides.split(",") if o]}
    (root / f"{avb.run_name(operator, method, seed)}.json").write_text(json.dumps({"args": args, "rows": rows}))


def test_offline_loop_arguments_and_run_names_of_a_method_spec():
    assert avb.offline_loop_args("aloe:extraction=ranked,beta=0.2") == [
        "--method", "aloe", "--train", "extraction=ranked", "--train", "beta=0.2"]
    assert avb.offline_loop_args("dagger") == ["--method", "dagger"]
    assert avb.run_name("imperfect", "aloe:extraction=ranked", 3) == "imperfect__aloe__extraction-ranked__s3"
    assert avb.offline_loop_args("aloe:beta=0.2+vg8") == ["--method", "aloe", "--train", "beta=0.2",
                                                          "--value-guided", "8"]
    assert avb.run_name("mixed", "aloe+vg8", 3) == "mixed__aloe__vg8__s3"
    assert (avb.value_guided("aloe:beta=0.2+vg8"), avb.value_guided("aloe")) == (8, 0)


def test_a_value_guided_method_is_scored_on_its_guided_episodes(tmp_path):
    ok, bad = [True] * 10, [True] * 4 + [False] * 6
    write_run(tmp_path, "mixed", "dagger", 0, [bad, bad], [[30] * 10, [30] * 10])
    path = tmp_path / f"{avb.run_name('mixed', 'aloe+vg4', 0)}.json"
    rows = [{"iteration": 0, "success_rate": 0.4, "eval_success": bad, "eval_steps": [30] * 10,
             "eval_throughput_per_hour": 1.0, "intervention_rate": 0.3},
            {"iteration": 1, "success_rate": 0.4, "eval_success": bad, "eval_steps": [30] * 10,
             "eval_throughput_per_hour": 1.0, "intervention_rate": 0.3, "vg_samples": 4, "vg_success_rate": 1.0,
             "vg_eval_success": ok, "vg_eval_steps": [20] * 10, "vg_eval_throughput_per_hour": 1800.0}]
    path.write_text(json.dumps({"args": {"method": "aloe", "seed": 0, "operator": "mixed", "train": [],
                                         "value_guided": 4}, "rows": rows}))
    summary = avb.summarise(avb.load(tmp_path))
    rec = next(r for r in summary["records"] if r["method"] == "aloe+vg4" and r["iteration"] == 1)
    assert rec["success"] == 1.0 and rec["throughput_per_hour"] == 1800.0
    test = next(t for t in summary["paired"] if t["metric"] == "success")
    assert (test["method"], test["baseline"], test["wins"], test["losses"]) == ("aloe+vg4", "dagger", 6, 0)


def test_throughput_counts_cycle_time():
    # 2 successes in 10 + 30 ticks of 0.1 s plus one 60-tick failure: 2 per 10 s = 720 per hour
    assert avb.throughput(np.array([1, 1, 0]), np.array([10, 30, 60])) == pytest.approx(720.0)


def test_paired_permutation_test_of_throughput_finds_a_faster_method_and_not_an_equal_one():
    rng = np.random.default_rng(0)
    s = np.ones(40, bool)
    fast, slow = rng.integers(20, 30, 40), rng.integers(35, 45, 40)
    diff, p = avb.paired_throughput_test(s, fast, s, slow, draws=2000)
    assert diff > 0 and p < 0.01
    diff, p = avb.paired_throughput_test(s, fast, s, fast, draws=2000)
    assert diff == 0 and p > 0.5


def test_summary_records_every_iteration_and_pairs_aloe_with_each_baseline_at_the_last_one(tmp_path):
    ok, bad = [True] * 10, [True] * 4 + [False] * 6
    for seed in (0, 1):
        write_run(tmp_path, "imperfect", "aloe", seed, [bad, ok], [[30] * 10, [20] * 10])
        write_run(tmp_path, "imperfect", "dagger", seed, [bad, bad], [[30] * 10, [30] * 10])
        write_run(tmp_path, "imperfect", "bc", seed, [bad, ok], [[30] * 10, [40] * 10])
    summary = avb.summarise(avb.load(tmp_path))
    assert len(summary["records"]) == 3 * 2 * 2
    rec = next(r for r in summary["records"] if r["method"] == "aloe" and r["seed"] == 1 and r["iteration"] == 1)
    assert rec["success"] == 1.0 and rec["operator"] == "imperfect" and rec["intervention_rate"] == pytest.approx(0.25)
    assert rec["throughput_per_hour"] == pytest.approx(10 / (200 * 0.1 / 3600))
    by = {(t["baseline"], t["metric"]): t for t in summary["paired"]}
    dagger = by[("dagger", "success")]
    assert (dagger["wins"], dagger["losses"], dagger["iteration"], dagger["seeds"]) == (12, 0, 1, [0, 1])
    assert dagger["p_value"] == pytest.approx(2 * 0.5 ** 12)
    bc = by[("bc", "success")]
    assert (bc["wins"], bc["losses"], bc["p_value"]) == (0, 0, 1.0)
    faster = by[("bc", "throughput_per_hour")]
    assert faster["wins"] == 20 and faster["losses"] == 0 and faster["p_value"] < 0.01
    text = avb.markdown(summary)
    assert "| imperfect | aloe vs dagger | success (1.00 vs 0.40) | 1 | 0,1 | 12 | 0 |" in text


def test_the_target_verdict_needs_every_rival_beaten_in_a_condition_and_none_significantly_ahead(tmp_path):
    ok, bad = [True] * 10, [True] * 4 + [False] * 6
    awr = "progress:sampling=weighted"
    for seed in (0, 1):  # skilled: ALOE ahead of both rivals; imperfect: level with Dagger, ahead of AWR
        write_run(tmp_path, "skilled", "aloe", seed, [bad, ok], [[30] * 10, [20] * 10])
        write_run(tmp_path, "skilled", "dagger", seed, [bad, bad], [[30] * 10, [30] * 10])
        write_run(tmp_path, "skilled", awr, seed, [bad, bad], [[30] * 10, [30] * 10])
        write_run(tmp_path, "imperfect", "aloe", seed, [bad, bad], [[30] * 10, [30] * 10])
        write_run(tmp_path, "imperfect", "dagger", seed, [bad, bad], [[30] * 10, [30] * 10])
        write_run(tmp_path, "imperfect", awr, seed, [bad, [False] * 10], [[30] * 10, [30] * 10])
    (verdict,) = avb.summarise(avb.load(tmp_path))["target"]
    assert verdict["method"] == "aloe" and verdict["rivals"] == ["dagger", awr] and verdict["iteration"] == [1]
    assert verdict["ahead_of_every_rival_in"] == ["skilled"] and verdict["ahead_per_rival"] == {
        "dagger": ["skilled"], awr: ["imperfect", "skilled"]}
    assert verdict["met"] and verdict["met_per_rival"] and verdict["significantly_behind"] == []
    # Dagger significantly ahead in one condition: not met, and the table says why
    for seed in (0, 1):
        write_run(tmp_path, "imperfect", "dagger", seed, [bad, ok], [[30] * 10, [30] * 10])
    summary = avb.summarise(avb.load(tmp_path))
    (verdict,) = summary["target"]
    assert not verdict["met"] and not verdict["met_per_rival"]
    assert [(b["baseline"], b["operator"], b["metric"]) for b in verdict["significantly_behind"]] == [
        ("dagger", "imperfect", "success"), ("dagger", "imperfect", "throughput_per_hour")]
    assert "Target (issue 14) for aloe at iteration 1: **not met**" in avb.markdown(summary)
    # without both rivals the study says nothing about the target
    assert avb.target_verdict([t for t in summary["paired"] if t["baseline"] == "dagger"]) == []


def test_summary_pairs_a_candidate_with_its_reference_on_the_chosen_seeds_only(tmp_path, capsys):
    ok, bad = [True] * 10, [True] * 4 + [False] * 6
    cand = "aloe:operator_share=0.5"
    for seed in (0, 1, 2):
        write_run(tmp_path, "skilled", "aloe", seed, [bad, bad], [[30] * 10, [30] * 10])
        write_run(tmp_path, "skilled", cand, seed, [bad, ok if seed else bad], [[30] * 10, [30] * 10])
        write_run(tmp_path, "skilled", "dagger", seed, [bad, bad], [[30] * 10, [30] * 10])
    summary = avb.summarise(avb.load(tmp_path), references=("aloe",))
    pairs = {(t["method"], t["baseline"]) for t in summary["paired"] if t["metric"] == "success"}
    assert pairs == {("aloe", "dagger"), (cand, "dagger"), (cand, "aloe")}, "the reference is not paired with itself"
    out = tmp_path / "s.json"
    assert avb.main(["summary", "--dir", str(tmp_path), "--seeds", "1", "2", "--reference", "aloe",
                     "--out", str(out)]) == 0
    vs = next(t for t in json.loads(out.read_text())["paired"]
              if (t["method"], t["baseline"], t["metric"]) == (cand, "aloe", "success"))
    assert (vs["seeds"], vs["wins"], vs["losses"]) == ([1, 2], 12, 0), "seed 0 (a tie there) is left out"
    assert avb.main(["summary", "--dir", str(tmp_path), "--seeds", "7"]) == 2
    assert avb.main(["summary", "--dir", str(tmp_path), "--reference", "aloe:beta=9"]) == 2
    assert "no runs of aloe:beta=9" in capsys.readouterr().err


def test_the_plot_labels_a_method_by_its_short_name_and_a_summary_can_keep_only_some_methods(tmp_path, capsys):
    ok, bad = [True] * 10, [True] * 4 + [False] * 6
    cand = "aloe:operator_share=0.5"
    for seed in (0, 1):
        write_run(tmp_path, "skilled", cand, seed, [bad, ok], [[30] * 10, [30] * 10])
        write_run(tmp_path, "skilled", "dagger", seed, [bad, bad], [[30] * 10, [30] * 10])
    write_run(tmp_path, "skilled", "bc", 0, [bad, bad], [[30] * 10, [30] * 10])
    summary = avb.summarise(avb.load(tmp_path))
    labels = avb.plot(summary, tmp_path / "p.png", {cand: "ALOE (S)"})
    assert sorted(labels) == ["ALOE (S) (2 seeds)", "bc (1 seed)", "dagger (2 seeds)"]
    assert (tmp_path / "p.png").stat().st_size > 10_000
    out = tmp_path / "s.json"
    assert avb.main(["summary", "--dir", str(tmp_path), "--name", f"{cand}=ALOE (S)", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["names"] == {cand: "ALOE (S)"}
    assert avb.main(["summary", "--dir", str(tmp_path), "--methods", cand, "dagger", "--out", str(out)]) == 0
    assert {r["method"] for r in json.loads(out.read_text())["records"]} == {cand, "dagger"}, "bc left out"
    assert avb.main(["summary", "--dir", str(tmp_path), "--methods", "aloe:beta=9"]) == 2
    assert avb.main(["summary", "--dir", str(tmp_path), "--name", "aloe:beta=9=B"]) == 2
    assert avb.main(["summary", "--dir", str(tmp_path), "--name", "S"]) == 2
    err = capsys.readouterr().err
    assert "--methods: no runs of aloe:beta=9" in err and "--name: give SPEC=LABEL" in err


def test_runs_of_a_seed_that_do_not_share_their_start_are_reported(tmp_path, capsys):
    ok, bad = [True] * 10, [True] * 4 + [False] * 6
    for op in ("skilled", "imperfect"):
        write_run(tmp_path, op, "aloe", 0, [bad, ok], [[30] * 10, [20] * 10])
        write_run(tmp_path, op, "dagger", 0, [bad, bad], [[30] * 10, [30] * 10])
    assert avb.summarise(avb.load(tmp_path))["inconsistent_starts"] == []
    write_run(tmp_path, "imperfect", "dagger", 0, [ok, bad], [[30] * 10, [30] * 10])  # another first phase
    assert avb.summarise(avb.load(tmp_path))["inconsistent_starts"] == [
        {"seed": 0, "run": ["imperfect", "dagger"], "reference": ["imperfect", "aloe"], "fields": ["eval_success"]}]
    assert avb.main(["summary", "--dir", str(tmp_path)]) == 0
    assert "WARNING: seed 0: run imperfect/dagger does not start where imperfect/aloe does" in capsys.readouterr().err


def test_runs_of_a_seed_made_under_other_numerics_are_noted(tmp_path, capsys):
    ok = [True] * 10
    for op, m in (("skilled", "aloe"), ("skilled", "dagger"), ("imperfect", "aloe")):
        write_run(tmp_path, op, m, 0, [ok, ok], [[20] * 10] * 2)
    write_run(tmp_path, "skilled", "bc", 0, [ok, ok], [[20] * 10] * 2)  # an older run: no numerics recorded
    avx512 = {"torch": "2.13.0+cpu", "cpu_capability": "AVX512", "ATEN_CPU_CAPABILITY": ""}
    for op, m, numerics in (("skilled", "aloe", avx512), ("skilled", "dagger", avx512),
                            ("imperfect", "aloe", {**avx512, "cpu_capability": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"})):
        path = tmp_path / f"{avb.run_name(op, m, 0)}.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "numerics": numerics}))
    summary = avb.summarise(avb.load(tmp_path))
    assert summary["inconsistent_starts"] == []  # the same start ...
    assert summary["mixed_numerics"] == [{"seed": 0, "numerics": [  # ... under two kinds of numerics
        {"numerics": {"torch": "2.13.0+cpu", "cpu_capability": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
         "runs": [["imperfect", "aloe"]]},
        {"numerics": avx512, "runs": [["skilled", "aloe"], ["skilled", "dagger"]]}]}]
    assert avb.main(["summary", "--dir", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "NOTE: seed 0: runs under 2 kinds of numerics" in err and "AVX2 (pinned): imperfect/aloe" in err
    (tmp_path / f"{avb.run_name('imperfect', 'aloe', 0)}.json").unlink()
    assert avb.summarise(avb.load(tmp_path))["mixed_numerics"] == []


@pytest.mark.slow
def test_a_tiny_study_runs_resumes_and_summarises(tmp_path):
    args = ["run", "--dir", str(tmp_path / "study"), "--seeds", "0", "--operators", "imperfect",
            "--methods", "aloe", "aloe+vg2", "dagger", "--iterations", "1", "--demos", "1", "--jobs", "2", "--nice", "0",
            "--extra", "--episodes", "1", "--eval", "2", "--init-steps", "3", "--policy-steps", "3",
            "--critic-steps", "3", "--max-steps", "12", "--image-size", "32", "--train", "ensemble_size=2",
            "--train", "num_policy_samples=2", "--train", "num_value_samples=4"]
    assert avb.main(args) == 0
    done = sorted(p.name for p in (tmp_path / "study").glob("imperfect__*.json"))
    assert done == ["imperfect__aloe__s0.json", "imperfect__aloe__vg2__s0.json", "imperfect__dagger__s0.json"]
    guided = json.loads((tmp_path / "study" / "imperfect__aloe__vg2__s0.json").read_text())["rows"][-1]
    plain = json.loads((tmp_path / "study" / "imperfect__aloe__s0.json").read_text())["rows"][-1]
    assert guided["vg_samples"] == 2 and len(guided["vg_eval_success"]) == 2
    assert guided["eval_success"] == plain["eval_success"], "the same training: the unguided episodes agree"
    stamp = {p: p.stat().st_mtime_ns for p in (tmp_path / "study").glob("imperfect__*.json")}
    assert avb.main(args) == 0, "a finished study resumes to nothing"
    assert stamp == {p: p.stat().st_mtime_ns for p in stamp}
    out = tmp_path / "avb.json"
    assert avb.main(["summary", "--dir", str(tmp_path / "study"), "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert {(r["method"], r["iteration"]) for r in data["records"]} == {
        ("aloe", 0), ("aloe", 1), ("aloe+vg2", 0), ("aloe+vg2", 1), ("dagger", 0), ("dagger", 1)}
    assert {t["metric"] for t in data["paired"]} == {"success", "throughput_per_hour"}
    assert out.with_suffix(".png").stat().st_size > 1000


def test_a_grid_still_running_is_paired_at_the_asked_iteration_over_the_seeds_that_reached_it(tmp_path):
    ok, bad = [True] * 10, [True] * 4 + [False] * 6
    for method, last in (("aloe", ok), ("dagger", bad)):
        write_run(tmp_path, "skilled", method, 0, [bad, bad, last], [[30] * 10] * 3)  # finished
        write_run(tmp_path, "skilled", method, 1, [bad, ok], [[30] * 10] * 2)  # one iteration to go
    default = next(t for t in avb.summarise(avb.load(tmp_path))["paired"] if t["metric"] == "success")
    assert (default["iteration"], default["seeds"], default["wins"]) == (1, [0, 1], 0), "as far as every seed got"
    at2 = next(t for t in avb.summarise(avb.load(tmp_path), iteration=2)["paired"] if t["metric"] == "success")
    assert (at2["iteration"], at2["seeds"], at2["wins"], at2["losses"]) == (2, [0], 6, 0)
    assert not avb.summarise(avb.load(tmp_path), iteration=3)["paired"], "no seed there yet"


def test_the_references_without_a_critic_are_paired_like_baselines(tmp_path):
    ok, bad = [True] * 10, [True] * 4 + [False] * 6
    write_run(tmp_path, "mixed", "aloe:sampling=weighted", 0, [bad, ok], [[30] * 10] * 2)
    for reference in ("filtered:sampling=weighted", "oracle", "random"):
        write_run(tmp_path, "mixed", reference, 0, [bad, bad], [[30] * 10] * 2)
    paired = {t["baseline"] for t in avb.summarise(avb.load(tmp_path))["paired"] if t["metric"] == "success"}
    assert paired == {"filtered:sampling=weighted", "oracle"}, "random is a control of the weights, not a rival"


def test_status_shows_each_runs_progress_and_not_its_results(tmp_path, capsys):
    import subprocess

    runs = {("skilled", "aloe", 0): 2, ("skilled", "dagger", 0): 1, ("imperfect", "aloe", 0): 1,
            ("imperfect", "dagger", 0): None, ("skilled", "bc", 1): None}
    (tmp_path / "study.json").write_text(json.dumps(
        {avb.run_name(op, m, s): {"operator": op, "method": m, "seed": s} for op, m, s in runs}))
    for (op, m, s), done in runs.items():
        if done is not None:
            write_run(tmp_path, op, m, s, [[True, False]] * (done + 1), [[20, 100]] * (done + 1))
    (tmp_path / f"{avb.run_name('skilled', 'dagger', 0)}.state").mkdir()
    (tmp_path / f"{avb.run_name('skilled', 'dagger', 0)}.state" / "state.json").write_text("{}")
    # a process that names a run's state the way offline_loop.py's command line does
    state = tmp_path / f"{avb.run_name('imperfect', 'aloe', 0)}.state"
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "--state", str(state), "--out", "x"])
    try:
        assert avb.main(["status", "--dir", str(tmp_path), "--iterations", "2", "--seeds", "0"]) == 0
    finally:
        proc.kill()
    rows = {tuple(c.strip() for c in line.strip("|").split("|")) for line in capsys.readouterr().out.splitlines()[2:]}
    assert rows == {("0", "skilled", "aloe", "2 / 2", "done"), ("0", "skilled", "dagger", "1 / 2", "resumable"),
                    ("0", "imperfect", "aloe", "1 / 2", "running"), ("0", "imperfect", "dagger", "0 / 2", "not started")}

    # several folders (a queue spanning them): a table each, under the folder's name
    other = tmp_path / "other"
    other.mkdir()
    (other / "study.json").write_text(json.dumps({avb.run_name("skilled", "bc", 3): {"operator": "skilled",
                                                                                       "method": "bc", "seed": 3}}))
    assert avb.main(["status", "--dir", str(tmp_path), str(other), "--iterations", "2"]) == 0
    out = capsys.readouterr().out
    assert out.index(str(tmp_path)) < out.index("| 0 | skilled | aloe | 2 / 2 | done |") < out.index(str(other))
    assert out.endswith("| 3 | skilled | bc | 0 / 2 | not started |\n")


def test_archive_keeps_finished_runs_and_never_overwrites_a_differing_copy(tmp_path, capsys):
    study, kept = tmp_path / "study", tmp_path / "kept"
    study.mkdir()
    runs = {("skilled", "aloe", 0): 2, ("skilled", "dagger", 0): 1}  # iterations finished: aloe done, dagger not
    (study / "study.json").write_text(json.dumps(
        {avb.run_name(op, m, s): {"operator": op, "method": m, "seed": s} for op, m, s in runs}))
    for (op, m, s), done in runs.items():
        write_run(study, op, m, s, [[True, False]] * (done + 1), [[20, 100]] * (done + 1))
        (study / f"{avb.run_name(op, m, s)}.log").write_text("log\n")
    done_name, partial_name = avb.run_name("skilled", "aloe", 0), avb.run_name("skilled", "dagger", 0)

    assert avb.main(["archive", "--dir", str(study), "--to", str(kept), "--iterations", "2"]) == 0
    assert sorted(p.name for p in kept.iterdir()) == sorted([f"{done_name}.json", f"{done_name}.log", "study.json"])
    assert (kept / f"{done_name}.json").read_bytes() == (study / f"{done_name}.json").read_bytes()
    assert json.loads((kept / "study.json").read_text()) == json.loads((study / "study.json").read_text())
    capsys.readouterr()

    # again: nothing to copy; then a rerun that came out differently is reported and the archived copy kept
    assert avb.main(["archive", "--dir", str(study), "--to", str(kept), "--iterations", "2"]) == 0
    assert "archived 0 files" in capsys.readouterr().out
    archived = (kept / f"{done_name}.json").read_bytes()
    write_run(study, "skilled", "aloe", 0, [[False, False]] * 3, [[100, 100]] * 3)
    assert avb.main(["archive", "--dir", str(study), "--to", str(kept), "--iterations", "2"]) == 1
    assert f"{done_name}: the archived JSON differs" in capsys.readouterr().err
    assert (kept / f"{done_name}.json").read_bytes() == archived
    assert not (kept / f"{partial_name}.json").exists()
