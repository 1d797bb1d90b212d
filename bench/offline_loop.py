#!/usr/bin/env python3
"""Offline mirror of the main job (``aloe-loop``): the same camera policy, operator, data and training
functions in one process, without ROS. Used to choose the main job's defaults: a variant is a few
minutes here instead of 15 over ROS, and every variant sees the same cube positions.

Per iteration, as the main job: ``--eval`` episodes of the policy alone (fixed seeds 500.. so
iterations are paired; their success rate is the metric) and ``--episodes`` supervised by the
scripted operator (seeds 1000 k ..), then one training iteration on everything collected:

* ``aloe`` / ``bc`` / ``dagger`` / ``progress`` / ``td1``: ``aloe_critic.train.run_iteration`` (the
  library's). ``--eval-critic-only`` puts the policy-alone episodes in ``critic_only_bags`` (they
  train the critic but are not imitated), as the main job does. ``dagger`` imitates the operator's
  chunks only (demonstrations + interventions), ``bc`` everything imitable, ``progress`` is AWR on
  Monte-Carlo returns of the behaviour.
* ``filtered``: a reference that uses the episode outcome, not a critic: imitate operator chunks
  and every chunk of a successful episode (success-filtered BC with interventions), of the imitable
  episodes (``--eval-critic-only`` keeps the evaluation episodes out, as for every method).
* ``oracle``: the ceiling of judging corrections (``mixed`` operator): Dagger's set without the
  corrections the scripted operator recorded as bad (it knows which it aimed off), no critic, every
  batch drawn from the kept chunks (``sampling: weighted`` on the 0/1 mask; ``filtered`` and ``random``
  draw as the main job's configuration does: from the kept chunks since it draws by weight (session 12),
  uniformly from the imitable chunks with the rest zeroed under ``--train sampling=uniform``). With the
  other operators (no bad corrections) it is Dagger.
* ``random``: a control for binary advantage weighting: bc on a random ``--keep-fraction`` of
  the imitable chunks (drawn anew each iteration), about the share binary ALOE keeps. ALOE below
  it means its critic picks worse than chance; near it, that it picks no better.

``--rollouts N`` adds N policy-alone *training* episodes per iteration on cube positions of their
own (the evaluation's stay unseen): the autonomous rollouts of the paper's buffer. They are imitable:
bc imitates them whole, Dagger ignores them (no operator chunk), progress and ALOE weight them by
their values: the data only a method that can judge the policy's own driving can use.

Operators (``--operator``): ``skilled`` is the main job's scripted operator; ``imperfect`` stands in
for a human: slower (2 cm steps), noisier (half a step of noise), aiming 1 cm off, and later to
take over (4 ticks of reaction delay, 12 of patience); ``mixed`` is the skilled operator whose
corrections vary in quality, as a human's do: half of them (drawn per takeover) aim 4 cm off the
cube, so their grasp misses or knocks it (the condition where a critic that tells good corrections
from bad ones has something to add over imitating them all). Per iteration the JSON records policy-alone
success, throughput (successes per robot-hour: successes / summed episode time, so cycle time
counts) and per-episode outcomes and lengths (for paired tests), and the supervised episodes'
success, throughput and intervention rate.

Example (the "Main job: what makes success rise" table of BENCHMARKS.md):
    python bench/offline_loop.py --demos 5 --eval-critic-only --save-init /tmp/init5 --out /tmp/aloe.json
    python bench/offline_loop.py --demos 5 --eval-critic-only --load-init /tmp/init5 --method bc --out /tmp/bc.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

LOG_T0 = time.monotonic()

# The operator conditions: SupervisorConfig / ScriptedConfig overrides on the main job's operator.
OPERATORS = {
    "skilled": {},
    "imperfect": {"reaction_delay_ticks": 4, "patience": 12,
                  "controller": {"step": 0.02, "noise": 0.5, "bias": (0.01, -0.01, 0.0)}},
    "mixed": {"bad_correction_prob": 0.5, "bad_aim": (0.04, 0.0, 0.0)},
}


def labelled_corrections(episodes: dict) -> list[tuple[int, int, int, bool]]:
    """The operator's corrections whose quality the scripted operator recorded: per correction (a run
    of operator ticks in a supervised episode, matched in order to the takeovers its EpisodeStats
    recorded as bad or good) (dataset episode index, first tick, end tick, bad). ``episodes``:
    dataset episode index -> (Episode, EpisodeStats). An episode whose runs do not match its labels
    (a correction cut by the episode's end merged with the next) is left out."""
    from aloe_data.schema import SOURCE_HUMAN

    out = []
    for e, (episode, stats) in episodes.items():
        labels = getattr(stats, "correction_bad", ())
        if not labels:
            continue
        human = np.asarray(episode.sources) == SOURCE_HUMAN
        starts = np.flatnonzero(human & ~np.r_[False, human[:-1]])
        ends = np.flatnonzero(human & ~np.r_[human[1:], False]) + 1
        if len(starts) == len(labels):
            out += [(e, int(a), int(b), bool(bad)) for a, b, bad in zip(starts, ends, labels)]
    return out


def correction_diagnostic(dataset, episodes: dict, advantages: np.ndarray, betas=(0.1, 0.3)) -> dict | None:
    """Does the critic tell the operator's bad corrections from its good ones? Per labelled correction
    (labelled_corrections) the mean raw advantage of its chunks; then the probability that a good
    correction scores above a bad one (AUC: 0.5 = no idea), and the share of the corrections'
    exp(A / beta) weight the bad ones get (their share of the corrections' chunks is what Dagger gives
    them). None when no episode recorded correction quality."""
    adv = np.asarray(advantages, np.float64)
    rows = dataset.indices
    ep_of, tick_of = dataset.episode[rows], dataset.tick_in_episode[rows]
    values, bad_flags, sizes = [], [], []
    for e, a, b, bad in labelled_corrections(episodes):
        inside = (ep_of == e) & (tick_of >= a) & (tick_of < b)  # the chunks starting in the correction
        if inside.any():
            values.append(adv[inside].mean())
            bad_flags.append(bad)
            sizes.append(int(inside.sum()))
    values, bad_flags, sizes = np.asarray(values), np.asarray(bad_flags, bool), np.asarray(sizes)
    if not bad_flags.any() or bad_flags.all():
        return None
    good, bad = values[~bad_flags], values[bad_flags]
    auc = float(((good[:, None] > bad[None, :]).mean() + 0.5 * (good[:, None] == bad[None, :]).mean()))
    out = {"corrections_good": int(len(good)), "corrections_bad": int(len(bad)),
           "advantage_good": float(good.mean()), "advantage_bad": float(bad.mean()), "auc_good_over_bad": auc,
           "bad_share_of_chunks": float(sizes[bad_flags].sum() / sizes.sum())}
    for beta in betas:
        w = np.exp(np.clip(values / beta, None, np.log(20.0))) * sizes
        out[f"bad_share_of_weight_beta{beta:g}"] = float(w[bad_flags].sum() / w.sum())
    return out


def oracle_keep(dataset, episodes: dict) -> np.ndarray:
    """(len(dataset),) bool: Dagger's set (the chunks the operator mostly executed) without the
    chunks of the corrections the scripted operator recorded as bad: what a critic that judged
    every correction perfectly could keep (the ``oracle`` reference): an operator chunk with any tick
    in a bad correction is dropped."""
    from aloe_critic.improvement import operator_chunks

    rows = dataset.indices
    ep_of, tick_of = dataset.episode[rows], dataset.tick_in_episode[rows]
    horizon = dataset.chunks.shape[1]
    keep = operator_chunks(dataset).copy()
    for e, a, b, bad in labelled_corrections(episodes):
        if bad:  # every chunk with a tick in the bad correction
            keep &= ~((ep_of == e) & (tick_of > a - horizon) & (tick_of < b))
    return keep


def make_operator(name: str, mode: str, max_steps: int, seed: int = 0):
    """The scripted operator of condition ``name`` in ``mode`` (correct / demo)."""
    from aloe_sim.scripted import OperatorSupervisor, ScriptedConfig, SupervisorConfig

    spec = dict(OPERATORS[name])
    controller = ScriptedConfig(**{**spec.pop("controller", {}), "seed": seed})
    return OperatorSupervisor(SupervisorConfig(mode=mode, max_steps=max_steps, controller=controller, **spec))


def phase_record(summary, prefix: str) -> dict:
    """Success, throughput (successes per robot-hour of episode time) and per-episode outcomes of a phase."""
    from aloe_sim.env import CONTROL_PERIOD_S

    hours = sum(st.steps for st in summary.stats) * CONTROL_PERIOD_S / 3600.0
    successes = sum(bool(st.success) for st in summary.stats)
    return {f"{prefix}_success": [bool(st.success) for st in summary.stats],
            f"{prefix}_steps": [int(st.steps) for st in summary.stats],
            f"{prefix}_throughput_per_hour": successes / hours if hours > 0 else 0.0}


def first_phase(path: Path, collect):
    """Iteration 0's (evaluation, supervised) episodes from ``path``, or collected and written there
    (atomically: runs of one seed may start together; the last writer's identical copy wins)."""
    import pickle

    from aloe_data.atomic import write_atomic

    if path.is_file():
        log(f"iteration 0's episodes from {path}")
        return pickle.loads(path.read_bytes())
    phases = collect()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, pickle.dumps(phases))
    return phases


class RunState:
    """What a run needs to go on after a finished iteration, in ``--state`` (issue 14: a study's five-iteration
    runs outlast a session): the policy, the episodes each iteration added, the corrections' labels, the
    operator (its noise and correction-quality draws carry over from episode to episode), the rows and the
    value-guided scorer. Written after each iteration's training, a file at a time, ``state.json`` last, so a
    kill anywhere leaves the previous iteration's state whole. Everything else a later iteration uses is
    seeded per episode or per iteration, so a resumed run equals an unbroken one (tested)."""

    def __init__(self, directory: str):
        self.dir = Path(directory) if directory else None

    def load(self, expected_args: dict):
        """(next iteration, policy, added episodes, labelled, operator, rows) or None when there is nothing
        to resume. Refuses a state written with other arguments."""
        import pickle

        from aloe_policy.model import FlowMatchingPolicy

        if self.dir is None or not (self.dir / "state.json").is_file():
            return None
        expected_args = json.loads(json.dumps(expected_args))  # as state.json holds them
        try:
            meta = json.loads((self.dir / "state.json").read_text())
            if meta["args"] != expected_args:
                diff = sorted(k for k in set(meta["args"]) | set(expected_args)
                              if meta["args"].get(k) != expected_args.get(k))
                if diff == ["numerics"]:
                    raise SystemExit(f"{self.dir} holds a run made under other numerics ({meta['args'].get('numerics')}"
                                     f", here {expected_args['numerics']}): resume it with the same settings "
                                     "(scripts/env.sh's ALOE_PORTABLE_NUMERICS), or remove it")
                raise SystemExit(f"{self.dir} holds a run with other arguments ({', '.join(diff)}): remove it or "
                                 f"pass another --state")
            k = meta["next_iteration"]
            policy = FlowMatchingPolicy.from_pretrained(self.dir / f"policy_{k:02d}")
            episodes = []
            for it in range(k):
                episodes += pickle.loads((self.dir / f"episodes_{it:02d}.pkl").read_bytes())
            labelled, operator = pickle.loads((self.dir / f"run_{k:02d}.pkl").read_bytes())
        except (OSError, ValueError, KeyError, EOFError, pickle.UnpicklingError) as e:  # CheckpointError: ValueError
            raise SystemExit(f"the run state in {self.dir} is unreadable ({type(e).__name__}: {e}); remove the folder "
                             f"to start the run over") from e
        return k, policy, episodes, labelled, operator, meta["rows"]

    def save(self, next_iteration: int, args: dict, policy, added: list, labelled: dict, operator, rows: list,
             scorer: Path | None) -> None:
        import pickle
        import shutil

        from aloe_data.atomic import write_atomic

        if self.dir is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        k = next_iteration
        write_atomic(self.dir / f"episodes_{k - 1:02d}.pkl", pickle.dumps(added))
        policy.save_pretrained(self.dir / f"policy_{k:02d}")
        write_atomic(self.dir / f"run_{k:02d}.pkl", pickle.dumps((labelled, operator)))
        if scorer is not None and scorer.is_file():
            write_atomic(self.dir / f"scorer_{k:02d}", scorer.read_bytes())
        write_atomic(self.dir / "state.json", json.dumps({"next_iteration": k, "args": args, "rows": rows}))
        for old in (f"policy_{k - 1:02d}", f"run_{k - 1:02d}.pkl", f"scorer_{k - 1:02d}"):  # superseded
            path = self.dir / old
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)

    def scorer(self, iteration: int) -> Path | None:
        """The value-guided chunk scorer the state's policy was evaluated with, if any."""
        path = self.dir / f"scorer_{iteration:02d}" if self.dir is not None else None
        return path if path is not None and path.is_file() else None

    def remove(self) -> None:
        import shutil

        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)


# What pins torch's CPU kernels to one instruction set (scripts/env.sh exports them under ALOE_PORTABLE_NUMERICS=1):
# set before torch loads, an AVX-512 machine makes an AVX2 machine's initial policies (BENCHMARKS part 24).
NUMERICS_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def numerics() -> dict:
    """What decides this process's rounding on the CPU: torch's version, the instruction set its kernels use and the
    settings that pin it. Runs under other numerics start from other initial policies and first phases (one seed's
    runs pair only if these agree), and a run is resumed only under its own."""
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            **{k: os.environ.get(k, "") for k in NUMERICS_ENV}}


def log(message: str) -> None:
    print(f"[{time.monotonic() - LOG_T0:6.0f} s] {message}", flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="aloe", choices=("aloe", "bc", "dagger", "progress", "td1", "filtered", "oracle",
                                                              "random"))
    p.add_argument("--operator", default="skilled", choices=tuple(OPERATORS),
                   help="who supervises: skilled (the main job's) or imperfect (slower, noisier, later)")
    p.add_argument("--keep-fraction", type=float, default=0.55,
                   help="--method random: the share of imitable chunks kept (binary ALOE keeps about this)")
    p.add_argument("--demos", type=int, default=5, help="scripted demonstrations for the initial policy")
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--episodes", type=int, default=10, help="supervised episodes per iteration")
    p.add_argument("--eval", type=int, default=20, help="policy-alone episodes per iteration (fixed seeds)")
    p.add_argument("--eval-critic-only", action="store_true",
                   help="policy-alone episodes train the critic only (TrainConfig.critic_only_bags)")
    p.add_argument("--no-eval-data", action="store_true", help="policy-alone episodes are not training data at all")
    p.add_argument("--rollouts", type=int, default=0,
                   help="policy-alone training episodes per iteration on their own cube positions (seeds 200000 + "
                        "1000 it ..), imitable by every method that imitates the policy's chunks: the paper's "
                        "autonomous rollouts in the buffer, kept apart from the evaluation episodes")
    p.add_argument("--init-steps", type=int, default=3000)
    p.add_argument("--policy-steps", type=int, default=1200)
    p.add_argument("--critic-steps", type=int, default=1500)
    p.add_argument("--init-lr", type=float, default=3e-4)
    p.add_argument("--improve-lr", type=float, default=3e-4)
    p.add_argument("--max-steps", type=int, default=100)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--cameras", default="workspace")
    p.add_argument("--replan", type=int, default=2, help="ticks between inferences (chunks run open-loop between)")
    p.add_argument("--policy", default="{}", help="JSON PolicyConfig overrides on the main job's network")
    p.add_argument("--train", action="append", default=[], metavar="FIELD=VALUE",
                   help="TrainConfig override, repeatable (default: the main job's settings)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-init", default="", help="save the initial policy here")
    p.add_argument("--load-init", default="", help="start from this initial policy (skips BC; same --demos/--seed)")
    p.add_argument("--first-phase-cache", default="",
                   help="folder of iteration 0's episodes: runs of one initial policy and operator (same --eval, "
                        "--episodes, --max-steps, --replan) collect them once and share them (episodes are seeded "
                        "per episode, so a run that loads them equals one that collects them)")
    p.add_argument("--value-guided", type=int, default=0, metavar="N",
                   help="also evaluate each improved policy with value-guided selection at deployment (best of N "
                        "samples under the iteration's critic, through the chunk scorer and selector policy_node "
                        "uses) on the same evaluation episodes: row fields vg_*; it changes nothing else")
    p.add_argument("--state", default="",
                   help="folder of the run's state after each finished iteration: the same command run again "
                        "resumes after the last finished iteration (identical to an unbroken run) instead of "
                        "starting over; removed when the run finishes")
    p.add_argument("--out", default="runs/bench/offline_loop.json", help="JSON results (untracked by default)")
    return p


def main(argv=None) -> int:
    import yaml

    from aloe_critic.dataset import TransitionDataset
    from aloe_critic.improvement import improve_policy, operator_chunks
    from aloe_critic.train import TrainConfig, apply_overrides, imitation_set, run_iteration, seed_everything
    from aloe_policy.model import FlowMatchingPolicy, PolicyConfig
    from aloe_sim.env import PickCubeSim
    from aloe_bringup.loop import LOOP_POLICY_CONFIG, LoopConfig
    from aloe_critic.critic import export_chunk_scorer
    from aloe_policy.selection import CHUNK_SCORER, ValueGuidedSelector
    from aloe_sim.offline import run_episodes

    a = build_parser().parse_args(argv)
    torch.set_num_threads(1)
    cameras = tuple(a.cameras.split(","))
    sim = PickCubeSim(cameras=cameras, image_size=a.image_size, max_steps=a.max_steps)

    overrides = {"progress": False}
    for item in a.train:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    # The main job's TrainConfig mapping (LoopConfig.train_config), with this run's sizes.
    loop = LoopConfig(seed=a.seed, image_size=a.image_size, init_policy_steps=a.init_steps, init_lr=a.init_lr,
                      eval_critic_only=a.eval_critic_only)
    apply_overrides(loop.train, {"policy_steps": a.policy_steps, "critic_steps": a.critic_steps,
                                 "policy_lr": a.improve_lr, **overrides})
    # The mapping writes policy_config.json into a run directory: a temporary one, removed at exit.
    scratch = tempfile.TemporaryDirectory(prefix="offline_loop_")

    def train_config(method: str, init: bool) -> TrainConfig:
        return loop.train_config(Path(scratch.name), method, init)

    # Demonstrations come from the skilled operator in every condition: the initial policy (and
    # --load-init) is shared, and only the corrections differ between operators.
    demo = make_operator("skilled", "demo", a.max_steps)
    demos = run_episodes(sim, range(10_000 + 100 * a.seed, 10_000 + 100 * a.seed + a.demos), supervisor=demo,
                         desc="demo")
    log(f"{a.demos} demonstrations, success {demos.success_rate:.2f}, mean length {demos.mean_length:.1f}")
    data = list(demos.episodes)
    labelled = {}  # dataset episode index -> (Episode, EpisodeStats) of the supervised episodes
    seed_everything(a.seed)
    dataset = TransitionDataset(data, 10, 0.99)
    if a.load_init:
        policy = FlowMatchingPolicy.from_pretrained(a.load_init)
    else:
        config = PolicyConfig.from_dict({**PolicyConfig().to_dict(), **LOOP_POLICY_CONFIG, "image_size": a.image_size,
                                         "camera_names": cameras, **json.loads(a.policy)})
        policy = FlowMatchingPolicy(config)
        policy.fit_normalization(*dataset.behaviour_arrays())
        run_iteration(train_config("bc", init=True), dataset, policy, fresh=True)
        if a.save_init:
            policy.save_pretrained(a.save_init)
    log(f"initial policy {policy.policy_id}")

    # One TrainConfig for every iteration; random/filtered/oracle imitate a 0/1 mask with binary weights.
    masked = a.method in ("random", "filtered", "oracle")
    iteration_config = train_config("bc" if masked else a.method, init=False)
    if masked:
        iteration_config.improvement = dataclasses.replace(iteration_config.improvement, weight_mode="binary")
    run_args = {**vars(a), "weight_mode": iteration_config.improvement.weight_mode}  # loop default or --train

    operator = make_operator(a.operator, "correct", a.max_steps, seed=a.seed)
    rows = []
    scorer_dir = Path(scratch.name) / "value_guided"  # the critic as policy_node's chunk scorer
    critic = None
    eval_seeds = range(500, 500 + a.eval)  # the same cube positions every iteration (and with --value-guided)
    state = RunState(a.state)
    same_run = {**{k: v for k, v in run_args.items() if k not in ("state", "out")}, "numerics": numerics()}
    start = 0
    resumed = state.load(same_run)
    if resumed is not None:
        start, policy, added, labelled, operator, rows = resumed
        data += added
        if state.scorer(start):
            scorer_dir.mkdir(exist_ok=True)
            (scorer_dir / CHUNK_SCORER).write_bytes(state.scorer(start).read_bytes())
        log(f"resumed from {a.state} after iteration {start - 1} (policy {policy.policy_id})")
    for it in range(start, a.iterations + 1):
        def collect():
            evaluation = run_episodes(sim, eval_seeds, policy=policy, desc=f"eval_{it:02d}",
                                      replan_every=a.replan)
            supervised = run_episodes(sim, range(1000 * (it + 1), 1000 * (it + 1) + a.episodes), policy=policy,
                                      supervisor=operator, desc=f"iter_{it:02d}", replan_every=a.replan)
            if not a.rollouts or it == a.iterations:  # the last iteration's would train nothing
                return evaluation, supervised
            rollouts = run_episodes(sim, range(200_000 + 1000 * it, 200_000 + 1000 * it + a.rollouts),
                                    policy=policy, desc=f"rollout_{it:02d}", replan_every=a.replan)
            return evaluation, supervised, rollouts

        if it == 0 and a.first_phase_cache:
            rollout_key = f"_o{a.rollouts}" if a.rollouts else ""
            phases = first_phase(Path(a.first_phase_cache) / (
                f"{policy.policy_id}_{a.operator}_e{a.eval}_n{a.episodes}_m{a.max_steps}_r{a.replan}{rollout_key}.pkl"),
                collect)
        else:
            phases = collect()
        evaluation, supervised, *rest = phases
        rollouts = rest[0] if rest else None
        row = {"iteration": it, "policy_id": policy.policy_id, "success_rate": evaluation.success_rate,
               **phase_record(evaluation, "eval"),
               "assisted_success_rate": supervised.success_rate, "intervention_rate": supervised.intervention_rate,
               "mean_episode_length": supervised.mean_length, **phase_record(supervised, "assisted")}
        if rollouts is not None:
            row.update({"rollout_success_rate": rollouts.success_rate, **phase_record(rollouts, "rollout")})
        log(f"iteration {it}: policy-alone success {evaluation.success_rate:.2f}, throughput "
            f"{row['eval_throughput_per_hour']:.0f}/h | supervised: success {supervised.success_rate:.2f}, intervention "
            f"rate {supervised.intervention_rate:.3f}, length {supervised.mean_length:.1f}"
            + (f" | rollouts: success {rollouts.success_rate:.2f}" if rollouts is not None else ""))
        if a.value_guided and (scorer_dir / CHUNK_SCORER).is_file():  # the episodes, steered by the last critic
            selector = ValueGuidedSelector(policy, scorer_dir, a.value_guided)
            guided = run_episodes(sim, eval_seeds, policy=selector, desc=f"eval_vg_{it:02d}",
                                  replan_every=a.replan)
            row.update({"vg_samples": a.value_guided, "vg_success_rate": guided.success_rate,
                        **phase_record(guided, "vg_eval")})
            log(f"iteration {it}: value-guided (best of {a.value_guided}) success {guided.success_rate:.2f}, "
                f"throughput {row['vg_eval_throughput_per_hour']:.0f}/h")
        if it < a.iterations:
            before = len(data)
            if not a.no_eval_data:
                for i, episode in enumerate(evaluation.episodes):
                    episode.bag = f"offline/bags/eval_{it:02d}/{i:03d}"  # as the main job's: critic_only_bags
                data += evaluation.episodes
            labelled.update({len(data) + i: pair for i, pair in enumerate(zip(supervised.episodes,
                                                                                supervised.stats))})
            data += supervised.episodes
            if rollouts is not None:
                for i, episode in enumerate(rollouts.episodes):
                    episode.bag = f"offline/bags/rollout_{it:02d}/{i:03d}"  # imitable: not an evaluation bag
                data += rollouts.episodes
            dataset = TransitionDataset(data, 10, 0.99)
            seed_everything(a.seed * 1000 + it)
            if masked:
                view, imitable = imitation_set(dataset, iteration_config.critic_only_bags)  # as run_iteration sees
                improvement = iteration_config.improvement
                if a.method == "random":  # a random share of the imitable chunks kept
                    keep = np.random.default_rng([a.seed, it]).random(len(view.indices)) < a.keep_fraction
                elif a.method == "oracle":  # Dagger's set without the bad corrections, drawn as Dagger draws its
                    keep = oracle_keep(dataset, labelled)[imitable]  # batches: uniformly from the kept chunks
                    improvement = dataclasses.replace(improvement, sampling="weighted")
                else:  # operator chunks and successful episodes' chunks of the imitable ones
                    keep = operator_chunks(view) | (view.outcome[view.indices] == "SUCCESS")
                if keep.any():
                    improve_policy(policy, view, np.where(keep, 1.0, -1.0).astype(np.float32), improvement,
                                   seed=a.seed)
                else:  # nothing to imitate: the policy stays as it is (weighted draws would have nothing to draw)
                    log(f"iteration {it}: {a.method} keeps no chunk; the policy is not trained")
                row["imitated_chunks"] = int(keep.sum())
            else:
                result = run_iteration(iteration_config, dataset, policy)
                policy, critic = result.policy, result.critic
                if a.value_guided and critic is not None:
                    scorer_dir.mkdir(exist_ok=True)
                    export_chunk_scorer(critic, policy, scorer_dir / CHUNK_SCORER,
                                        dataset.observations(dataset.obs_tick[:2]))
                if result.advantage_stats:
                    st = result.advantage_stats
                    row["imitated_chunks"] = st.get("imitated_chunks")
                    row["fraction_positive_by_group"] = st["fraction_positive_by_group"]
                    row["value_samples"] = st["value_samples"]
                    row["ranked_replaced_fraction"] = st["ranked_replaced_fraction"]
                    row["q_std_mean"] = st["q_std"]["mean"]
                    row["advantage"] = st["advantage"]  # mean, std, min, max over every chunk (raw, per chunk)
                    if "weights" in st:
                        row["weights"] = st["weights"]
                        if "operator_preference" in st["weights"]:  # operator_share_rule "critic"
                            log(f"iteration {it}: operator share {st['weights']['operator_share']:.2f} of the draws "
                                f"(the critic prefers a correction's chunk in "
                                f"{100 * st['weights']['operator_preference']:.0f} % of the pairs)")
                    if "conditioned" in st:
                        row["conditioned"] = st["conditioned"]
                    if "value_data" in st:  # value_data "current": V from the policy's own chunks (or why not)
                        row["value_data"] = st["value_data"]
                        v = st["value_data"]
                        log(f"iteration {it}: V from the policy's own {v['transitions']} chunks ({v['episodes']} "
                            f"episodes, {v['seconds']:.0f} s)" if v["value_data"] == "current" else
                            f"iteration {it}: {v['reason']}")
                    quality = correction_diagnostic(dataset, labelled, result.values["advantage"])
                    if quality:  # the mixed operator: does the critic tell its bad corrections from the good?
                        row["correction_quality"] = quality
                        log("corrections: " + ", ".join(f"{k} {v:.3g}" for k, v in quality.items()))
        rows.append(row)
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({"args": run_args, "numerics": same_run["numerics"], "rows": rows},
                                          indent=1))
        if it < a.iterations:
            state.save(it + 1, same_run, policy, data[before:], labelled, operator, rows,
                       scorer_dir / CHUNK_SCORER if a.value_guided else None)
    state.remove()
    log("success per iteration: " + ", ".join(f"{r['success_rate']:.2f}" for r in rows) + f" -> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
