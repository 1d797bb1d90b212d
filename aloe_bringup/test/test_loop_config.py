"""aloe-loop's configuration: its own fields, and aloe-train's TrainConfig held whole (not copied)."""

import yaml

from aloe_bringup.loop import LOOP_OWNED, QUICK, build_parser, config_from_args, loop_train_config


def test_loop_config_holds_train_config_with_precedence_quick_yaml_flags(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text(yaml.safe_dump({"iterations": 2, "seed": 5, "train": {"policy_steps": 50, "critic": {
        "ensemble_size": 4}, "beta": 0.3}}))
    args = build_parser().parse_args(["--quick", "--config", str(path), "--ensemble-size", "3", "--seed", "6",
                                      "--train", "beta=0.2", "--weight-mode", "binary"])
    config = config_from_args(args)
    assert config.iterations == 2 and config.seed == 6 and config.eval_episodes == QUICK["eval_episodes"]
    train = config.train
    assert train.improvement.policy_steps == 50, "the YAML's train section over --quick"
    assert train.critic.ensemble_size == 3 and train.improvement.beta == 0.2, "flags over the YAML"
    assert train.improvement.weight_mode == "binary" and train.critic.critic_steps == QUICK["train"]["critic_steps"]


def test_each_run_takes_the_loops_method_seed_and_data_split_and_the_init_its_own_steps(tmp_path):
    config = config_from_args(build_parser().parse_args(["--seed", "3", "--init-policy-steps", "11",
                                                         "--policy-steps", "22", "--beta", "0.4"]))
    improve = config.train_config(tmp_path, "aloe", init=False)
    init = config.train_config(tmp_path, "bc", init=True)
    assert (improve.method, improve.seed, improve.init_only) == ("aloe", 3, False)
    assert improve.improvement.policy_steps == 22 and improve.improvement.beta == 0.4
    assert improve.critic_only_bags == ["*/bags/eval_*/*"] and improve.ingestion.image_size == config.image_size
    assert (init.method, init.init_only, init.improvement.policy_steps) == ("bc", True, 11)
    assert init.improvement.policy_lr == config.init_lr
    assert config.train.improvement.policy_steps == 22, "the loop's own TrainConfig is not changed by a run"


def test_help_lists_the_loop_and_every_aloe_train_field_but_not_the_ones_the_loop_sets():
    text = build_parser().format_help()
    assert "the loop (LoopConfig)" in text and "--ensemble-size" in text and "--advantage-pooling" in text
    import re

    flags = set(re.findall(r"^\s+(--[\w-]+)", text, re.M))
    assert "--init-only" not in flags and "--critic-only-bags" not in flags and "--policy-steps" in flags
    assert set(LOOP_OWNED) <= set(vars(loop_train_config())) | {"image_size", "cache_dir"}


def test_a_phase_bar_written_to_a_file_is_drawn_per_episode_not_per_wait():
    import io
    import itertools

    from aloe_bringup.loop import PhaseProgress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    def draws(file) -> list[str]:
        with PhaseProgress(2, "iter_01 (correct)", file=file) as bar:
            clock = itertools.count(bar.bar.start_t, 0.5)  # every look at the clock: half a second later
            bar.bar._time = lambda: next(clock)
            for done in [0] * 200 + [1] * 200 + [2]:  # two episodes end after minutes of waiting
                bar.advance(done)
        return [d for d in file.getvalue().replace("\n", "\r").split("\r") if d.strip()]

    logged = draws(io.StringIO())  # a log file: not a terminal
    assert len(logged) <= 4, logged  # the empty bar, one per episode, the closing one
    assert "2/2" in logged[-1] and "iter_01 (correct)" in logged[-1]
    assert len(draws(Terminal())) > 100  # on a terminal the elapsed time keeps ticking
