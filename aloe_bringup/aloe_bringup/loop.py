"""``aloe-loop``: the whole human-in-the-loop ALOE loop in simulation, over real ROS 2 processes.

    1. demonstrations: sim_node + operator_node (demo mode) + executor_node + recorder_node;
       every episode becomes a rosbag2 MCAP bag
    2. initial policy: behaviour cloning on the demonstration bags (aloe-train --init-only)
    3. iterate: the policy runs (policy_node, asynchronous inference) while the scripted
       operator watches and takes over when it goes wrong -> bags -> ALOE critic for the
       current policy + advantage-weighted improvement on all bags -> LoadPolicy hot reload
       into the running policy_node
    4. a table per iteration and a report (PNG plots + HTML) in the run directory

policy_node and executor_node stay up for the whole run (the policy is hot-reloaded); sim_node,
operator_node and recorder_node run once per phase. Nothing needs the ``launch`` package: the
nodes start from their entry points with the shipped sim.yaml (launch/config), as the launch file
would.
"""

from __future__ import annotations

from aloe_data import schema

import argparse
import copy
import json
import logging
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml

from aloe_data.atomic import write_atomic
from aloe_data.config_cli import add_config_arguments, apply_overrides, overrides_from_args

from .bringup import NodeGroup, config_file, load_params, start_nodes
from .node_sets import NODE_SETS

log = logging.getLogger("aloe_loop")

# The small network that fits the 2-core CPU budget (see BENCHMARKS.md, loop sizing).
# Keypoints + shift augmentation: BC from 60 demos 0.45 -> 0.65 grasp success (BENCHMARKS.md "Main job").
LOOP_POLICY_CONFIG = {"cnn_channels": [16, 32, 32], "hidden_dim": 128, "head_hidden_dim": 256, "head_layers": 2,
                      "cnn_keypoints": 16, "image_shift": 4}


def loop_train_config():
    """The main job's training configuration: aloe-train's TrainConfig with the CPU-sized choices
    below (every other field as aloe-train has it). Measured: BENCHMARKS.md "Main job" / loop sizing."""
    from aloe_critic.train import TrainConfig

    return apply_overrides(TrainConfig(), {
        "policy_steps": 1200,        # advantage-weighted steps per iteration (600 barely moved the policy)
        "policy_batch_size": 32,
        "policy_lr": 3e-4,
        "ema_decay": 0.995,          # the policy ends with the moving average of its weights
        "critic_steps": 1500,
        "critic_batch_size": 256,
        "ensemble_size": 5,
        "freeze_encoder": True,      # Q heads on the policy's frozen features: the CPU-sized choice
        "num_policy_samples": 4,     # A'_j ~ pi per observation for the TD target
        # Candidate S of BENCHMARKS "ALOE vs its rivals" (parts 15-17), picked on the tuning seeds 16-17 over five
        # iterations: each stretch of driving judged by where it led, the operator's corrections trusted (weight 1),
        # the policy's own chunks weighted by the critic up to 1, batches drawn by the weights with half of each
        # draw on the corrections: 131 vs 100 successes of 160 against the same without the share (p = 0.001
        # skilled, 0.005 imperfect). On fresh seeds 18-20 (part 23) it is level with Dagger and ahead of AWR (skilled).
        "sampling": "weighted",
        "advantage_pooling": "option",
        "trust_operator": True,
        "w_max": 1.0,
        "operator_share": 0.5,
    })


@dataclass
class LoopConfig:
    """Every knob of the main job. Defaults: ~12 minutes on a 2-core machine, no GPU (BENCHMARKS.md)."""

    run_dir: str = ""                    # '' = runs/<date-time> under $ALOE_ROOT (scripts/env.sh), else here
    method: str = "aloe"                 # value signal of the improvement: aloe | bc | dagger | progress | td1
    iterations: int = 3                  # improvement iterations after the initial policy
    demo_episodes: int = 5               # scripted demonstrations for the initial policy (~16 ticks each): a
                                         # weak start (~0.25) that the human-in-the-loop iterations improve
    episodes_per_iteration: int = 10     # policy episodes (with operator takeovers) per iteration
    eval_episodes: int = 20              # policy-only episodes (operator off) per iteration: success rate.
                                         # Also training data: the only episodes where the policy's own
                                         # failures reach the sparse reward (the operator rescues the rest)
    seed: int = 0                        # seeds the episodes, the operator and every training run
    image_size: int = 64                 # camera image side, pixels (the sim renders it, the policy takes it)
    max_steps: int = 100                 # ticks (0.1 s) per episode
    operator_noise: float = 0.0          # operator quality: action noise, fraction of its 3 cm step
    reaction_delay_ticks: int = 2        # operator: ticks between noticing a problem and taking over
    init_policy_steps: int = 3000        # BC gradient steps of the initial policy
    init_lr: float = 3e-4                # learning rate of the initial behaviour cloning
    compare_with: str = "dagger"         # a baseline method trained every iteration on the same bags from its own
                                         # previous checkpoint and evaluated alone on the same episodes as the
                                         # loop's policy (its rollouts train nothing); '' = none
    eval_critic_only: bool = True        # policy-alone episodes train the critic but are not imitated: their
                                         # stuck ticks would be most of the imitated chunks (BENCHMARKS.md)
    torch_threads: int = 1               # 1: OpenMP threads spin against the ROS nodes on a 2-core machine
    params_file: str = ""                # '' = the shipped sim.yaml (launch/config, installed with aloe_bringup)
    episode_deadline_s: float = 90.0     # wall-clock deadline per episode before a phase is declared hung
    pause_between_episodes_s: float = 0.5  # wall time between episodes (the recorder closes a bag)
    train: object = field(default_factory=loop_train_config)  # aloe-train's TrainConfig of every iteration
                                         # (flags as aloe-train's; YAML: a train: section)

    def __post_init__(self):
        from aloe_critic.train import METHODS

        if self.compare_with and self.compare_with not in METHODS:
            raise ValueError(f"compare_with must be '' or one of {METHODS}, got {self.compare_with!r}")

    def train_config(self, run_dir: Path, method: str, init: bool):
        """The TrainConfig of one training run: ``train`` with this loop's method, seed, sizes and data
        split; the initial behaviour cloning takes init_policy_steps and init_lr."""
        policy_json = run_dir / "policy_config.json"
        if not policy_json.exists():
            policy_json.write_text(json.dumps({**LOOP_POLICY_CONFIG, "image_size": self.image_size}))
        config = copy.deepcopy(self.train)
        apply_overrides(config, {
            "method": method, "seed": self.seed, "init_only": init, "policy_config_file": str(policy_json),
            "cache_dir": str(run_dir / "cache"), "image_size": self.image_size, "value_plots": not init,
            "critic_only_bags": ["*/bags/eval_*/*"] if self.eval_critic_only else []})
        if init:
            apply_overrides(config, {"policy_steps": self.init_policy_steps, "policy_lr": self.init_lr})
        return config


# ---------------------------------------------------------------------------------------------
# metrics of a phase, read back from its bags
# ---------------------------------------------------------------------------------------------

def phase_metrics(bag_dir: Path, cache_dir: Path, image_size: int) -> dict:
    """Success rate, intervention rate (operator ticks / ticks), takeovers, mean length."""
    from aloe_data.ingestion import IngestionConfig, ingest_bags
    from aloe_data.schema import SOURCE_HUMAN

    report = ingest_bags([bag_dir], IngestionConfig(cache_dir=str(cache_dir), image_size=image_size))
    episodes = report.episodes
    if not episodes:
        return {"episodes": 0, "skipped": len(report.skipped)}
    human = [np.asarray(e.sources) == SOURCE_HUMAN for e in episodes]
    takeovers = [int(np.sum(np.diff(np.concatenate([[0], h.astype(int)])) == 1)) for h in human]
    success = [e.outcome == "SUCCESS" for e in episodes]
    return {
        "episodes": len(episodes), "skipped": len(report.skipped),
        "success_rate": float(np.mean(success)),
        "no_takeover_success_rate": float(np.mean([s and t == 0 for s, t in zip(success, takeovers)])),
        "intervention_rate": float(sum(h.sum() for h in human) / max(1, sum(len(e) for e in episodes))),
        "takeovers_per_episode": float(np.mean(takeovers)),
        "mean_episode_length": float(np.mean([len(e) for e in episodes])),
    }


# ---------------------------------------------------------------------------------------------
# the ROS side: phases of node processes, hot reload
# ---------------------------------------------------------------------------------------------

class PhaseProgress:
    """A phase's episodes as a progress bar: on a terminal it redraws as time passes; written to a file (a log, a CI
    run) it is drawn again only when an episode ends, so a twenty-minute job logs a line per episode, not one per
    half second of waiting."""

    def __init__(self, total: int, desc: str, file=None):
        from aloe_data.progress import is_terminal, progress_bar

        file = sys.stderr if file is None else file
        self.live = is_terminal(file)
        self.bar = progress_bar(total=total, desc=desc, unit="ep", file=file, mininterval=0.1 if self.live else 0.0)

    def advance(self, done: int) -> None:
        """``done`` episodes have ended."""
        if self.live or done != self.bar.n:
            self.bar.update(done - self.bar.n)

    def __enter__(self) -> "PhaseProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()


class LoopNode:
    """The loop's own rclpy node: a client of policy_node's LoadPolicy service and a subscriber of
    the episode events, which is how the loop follows a phase (every wait has a deadline)."""

    def __init__(self, service: str = schema.SERVICE_LOAD_POLICY, event_topic: str = schema.TOPIC_EPISODE_EVENT):
        import rclpy
        from aloe_msgs.msg import EpisodeEvent
        from aloe_msgs.srv import LoadPolicy
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        self._rclpy = rclpy
        if not rclpy.ok():
            # Keep Python's SIGINT handling: Ctrl-C must stop the loop during training too (rclpy's
            # own handler would only shut its context down and training would go on).
            from rclpy.signals import SignalHandlerOptions

            rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node("aloe_loop")
        self.client = self.node.create_client(LoadPolicy, service)
        self._request_type = LoadPolicy.Request
        self.event_topic = event_topic
        self.ended: dict[str, str] = {}  # episode_id -> outcome, since the last reset_episodes()
        self.node.create_subscription(EpisodeEvent, event_topic, self._on_event,
                                      QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))

    def _on_event(self, msg) -> None:
        if msg.event != schema.EVENT_START:
            self.ended[msg.episode_id] = schema.EVENT_NAMES.get(msg.event, str(msg.event))

    def reset_episodes(self) -> None:
        self.ended = {}

    def spin(self, seconds: float) -> None:
        """Handle what arrived (episode events) for up to ``seconds``."""
        deadline = time.monotonic() + seconds
        while True:
            self._rclpy.spin_once(self.node, timeout_sec=max(0.0, deadline - time.monotonic()))
            if time.monotonic() >= deadline:
                return

    def has_subscriber(self, topic: str, node_name: str) -> bool:
        """Whether ``node_name`` subscribes to ``topic`` now (the ROS graph, not its log)."""
        return any(info.node_name == node_name for info in self.node.get_subscriptions_info_by_topic(topic))

    def load(self, checkpoint: Path, timeout_s: float = 120.0) -> str:
        if not self.client.wait_for_service(timeout_sec=60.0):
            raise RuntimeError("policy_node's LoadPolicy service did not appear within 60 s: see policy_node.log")
        future = self.client.call_async(self._request_type(checkpoint_path=str(checkpoint)))
        self._rclpy.spin_until_future_complete(self.node, future, timeout_sec=timeout_s)
        if not future.done():
            raise RuntimeError(f"LoadPolicy({checkpoint}) got no answer within {timeout_s} s")
        result = future.result()
        if not result.success:
            raise RuntimeError(f"policy_node refused {checkpoint}: {result.message}")
        return result.policy_id

    def close(self) -> None:
        self.node.destroy_node()
        self._rclpy.try_shutdown()


class LoopRunner:
    def __init__(self, config: LoopConfig):
        self.config = config
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.run_dir = Path(config.run_dir or Path(os.environ.get("ALOE_ROOT", ".")) / "runs" / stamp).resolve()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.params_file = Path(config.params_file or config_file("sim"))
        self.entries = {e[2]: e for e in NODE_SETS["sim"]}
        self.clock_s = 1.0
        self.core: NodeGroup | None = None
        self.ros: LoopNode | None = None
        self.phase_events: dict[str, dict[str, int]] = {}  # phase -> outcome -> episodes, from the event topic
        self.rows: list[dict] = []

    # -- processes ---------------------------------------------------------------------------
    def _params(self, phase: str, operator_mode: str, episodes: int, seed: int) -> dict:
        c = self.config
        return load_params(self.params_file, {
            "sim_node": {"episodes": episodes, "seed": seed, "image_size": c.image_size, "max_steps": c.max_steps,
                         "clock_start_s": self.clock_s, "real_time_factor": 0.0,
                         "pause_between_episodes_s": c.pause_between_episodes_s,
                         # /aloe/reward: only the recorder listens (it subscribes once it has seen the sim's
                         # publishers); /aloe/sim/state: only the operator
                         "wait_for_subscribers": [schema.TOPIC_REWARD, schema.TOPIC_SIM_STATE, schema.TOPIC_EPISODE_EVENT]},
            "operator_node": {"mode": operator_mode, "noise": c.operator_noise, "seed": seed,
                              "reaction_delay_ticks": c.reaction_delay_ticks, "max_steps": c.max_steps},
            "recorder_node": {"output_dir": str(self.run_dir / "bags" / phase)},
            "policy_node": {"torch_threads": 1, "seed": c.seed},
        })

    def start_core(self) -> None:
        """policy_node + executor_node: up for the whole run."""
        params = self._params("core", "off", 0, 0)
        self.core = start_nodes([self.entries["policy_node"], self.entries["executor_node"]], params,
                                self.run_dir / "logs", tag="")

    def run_phase(self, phase: str, operator_mode: str, episodes: int, seed: int) -> Path:
        """One phase (sim_node + operator_node + recorder_node for ``episodes`` episodes), followed by
        the episode events on the ROS graph: progress bar, deadline, and a dead node's output."""
        c = self.config
        params = self._params(phase, operator_mode, episodes, seed)
        logs = self.run_dir / "logs"
        recorder = start_nodes([self.entries["recorder_node"]], params, logs, tag=f"_{phase}")
        self._wait_for_subscriber(recorder["recorder_node"], self.ros.event_topic, 60.0)
        self.ros.reset_episodes()
        group = start_nodes([self.entries["operator_node"], self.entries["sim_node"]], params, logs, tag=f"_{phase}")
        sim = group["sim_node"]
        deadline = time.monotonic() + 60.0 + episodes * c.episode_deadline_s
        try:
            with PhaseProgress(episodes, f"{phase} ({operator_mode})") as bar:
                while sim.alive():
                    for dead in [p for p in (self.core.processes + recorder.processes) if not p.alive()]:
                        raise RuntimeError(f"{dead.name} died during {phase}:\n{dead.tail()}")
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{phase}: {len(self.ros.ended)} of {episodes} episodes ended in time; "
                                           f"sim_node's last output:\n{sim.tail()}")
                    self.ros.spin(0.5)
                    bar.advance(min(episodes, len(self.ros.ended)))
                self.ros.spin(0.2)  # the last end event
                bar.advance(min(episodes, len(self.ros.ended)))
            outcomes = list(self.ros.ended.values())
            self.phase_events[phase] = {o: outcomes.count(o) for o in sorted(set(outcomes))}
            if sim.popen.returncode != 0:
                raise RuntimeError(f"sim_node exited with {sim.popen.returncode} in {phase}:\n{sim.tail()}")
        finally:
            group.stop()
            time.sleep(0.5)  # the last end event reaches the recorder before it closes
            recorder.stop()
        self.clock_s += episodes * (c.max_steps + 5) * 0.1 + 10.0  # sim time only moves forward
        return self.run_dir / "bags" / phase

    def _wait_for_subscriber(self, process, topic: str, timeout: float) -> None:
        """Until ``process``'s node subscribes to ``topic`` (it is ready to record a phase)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.alive():
            if self.ros.has_subscriber(topic, process.name):
                return
            self.ros.spin(0.1)
        raise RuntimeError(f"{process.name} did not subscribe to {topic} within {timeout} s:\n{process.tail()}")

    def _evaluate_baseline(self, it: int, baseline: Path, checkpoint: Path, row: dict, loader) -> dict:
        """The compare_with baseline's policy alone on the episodes (seeds) the loop's policy just ran:
        hot-loaded, evaluated into bags/<method>_eval_<it>, then the loop's policy loaded back. Before
        the first training both are the initial policy: its measurement is the loop's."""
        c = self.config
        name = c.compare_with
        if baseline == checkpoint:
            return {"baseline_success_rate": row["success_rate"], "baseline_eval_episodes": row["eval_episodes"]}
        loader.load(baseline)
        try:
            bags = self.run_phase(f"{name}_eval_{it:02d}", "off", c.eval_episodes, seed=500 * it + c.seed)
        finally:
            loader.load(checkpoint)
        evaluation = phase_metrics(bags, self.run_dir / "cache", c.image_size)
        return {"baseline_success_rate": evaluation.get("success_rate", float("nan")),
                "baseline_eval_episodes": evaluation.get("episodes", 0)}

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> list[dict]:
        import torch

        from aloe_critic.train import train_iteration

        c = self.config
        torch.set_num_threads(c.torch_threads)
        write_atomic(self.run_dir / "loop_config.json", json.dumps(asdict(c), indent=1))
        print(f"ALOE loop: run directory {self.run_dir}\n{json.dumps(asdict(c), indent=1)}", flush=True)
        self.ros = loader = LoopNode(event_topic=self._params("core", "off", 0, 0).get("sim_node", {}).get(
            "ros__parameters", {}).get("episode_event_topic", schema.TOPIC_EPISODE_EVENT))
        self.start_core()
        t0 = time.monotonic()
        try:
            demo_dir = self.run_phase("demos", "demo", c.demo_episodes, seed=10_000 + c.seed)
            demo = phase_metrics(demo_dir, self.run_dir / "cache", c.image_size)
            print(f"demonstrations: {demo['episodes']} episodes, success {demo.get('success_rate', 0):.2f}", flush=True)
            result = train_iteration(c.train_config(self.run_dir, "bc", init=True), [demo_dir], None,
                                     self.run_dir / "checkpoints" / "iter_00")
            checkpoint = result.checkpoint_dir
            policy_id = loader.load(checkpoint)
            print(f"initial policy {policy_id} (BC on {result.num_transitions} transitions, "
                  f"{result.seconds:.0f} s); hot-loaded", flush=True)
            bag_dirs = [demo_dir]
            baseline = checkpoint  # the compare_with method starts from the same initial policy
            for it in range(1, c.iterations + 2):
                t_it = time.monotonic()
                row = {"iteration": it - 1, "policy_id": policy_id}
                if c.eval_episodes:
                    # The policy alone (operator off): its success rate. These online rollouts of
                    # the current policy are training data too.
                    eval_dir = self.run_phase(f"eval_{it:02d}", "off", c.eval_episodes, seed=500 * it + c.seed)
                    bag_dirs.append(eval_dir)
                    evaluation = phase_metrics(eval_dir, self.run_dir / "cache", c.image_size)
                    row["success_rate"] = evaluation.get("success_rate", float("nan"))
                    row["eval_episodes"] = evaluation.get("episodes", 0)
                    if c.compare_with:
                        row.update(self._evaluate_baseline(it, baseline, checkpoint, row, loader))
                phase_dir = self.run_phase(f"iter_{it:02d}", "correct", c.episodes_per_iteration,
                                           seed=1000 * it + c.seed)
                bag_dirs.append(phase_dir)
                supervised = phase_metrics(phase_dir, self.run_dir / "cache", c.image_size)
                supervised["assisted_success_rate"] = supervised.pop("success_rate", float("nan"))
                row.update(supervised)
                if it <= c.iterations:  # the last phase only measures the final policy
                    result = train_iteration(c.train_config(self.run_dir, c.method, init=False), bag_dirs,
                                             checkpoint, self.run_dir / "checkpoints" / f"iter_{it:02d}")
                    critic_curve = result.curves.get("critic", [])
                    row["critic_loss"] = float(critic_curve[-1]["critic_loss"]) if critic_curve else float("nan")
                    row["train_s"] = result.seconds
                    groups = (result.advantage_stats or {}).get("fraction_positive_by_group", {})
                    for name, key in (("policy_in_success", "adv_pos_success"),
                                      ("policy_in_failure", "adv_pos_failure"), ("operator", "adv_pos_operator")):
                        if name in groups:  # share of these chunks with A > 0 (a critic diagnostic)
                            row[key] = groups[name]["fraction_positive"]
                    checkpoint = result.checkpoint_dir
                    if c.compare_with:  # the baseline learns from the same bags, from its own last policy
                        baseline = train_iteration(c.train_config(self.run_dir, c.compare_with, init=False), bag_dirs,
                                                   baseline, self.run_dir / "checkpoints" / f"{c.compare_with}_{it:02d}"
                                                   ).checkpoint_dir
                    policy_id = loader.load(checkpoint)
                    row["next_policy_id"] = policy_id
                row["wall_s"] = time.monotonic() - t_it
                self.rows.append(row)
                print_table(self.rows)
                write_atomic(self.run_dir / "metrics.json", json.dumps(self.rows, indent=1))
        finally:
            if self.core is not None:
                self.core.stop()
            loader.close()
        from .report import write_report

        report = write_report(self.run_dir, self.rows, asdict(c), time.monotonic() - t0)
        print(f"report: {report}", flush=True)
        return self.rows


def print_table(rows: list[dict]) -> None:
    """The loop's progress table (names in full: the report's legend explains them)."""
    cols = [("policy", "iteration", "{:d}"), ("success alone", "success_rate", "{:.2f}"),
            ("baseline alone", "baseline_success_rate", "{:.2f}"),
            ("success supervised", "assisted_success_rate", "{:.2f}"), ("intervention", "intervention_rate", "{:.3f}"),
            ("takeovers/ep", "takeovers_per_episode", "{:.2f}"), ("length", "mean_episode_length", "{:.1f}"),
            ("critic TD loss", "critic_loss", "{:.2g}"), ("A>0 success", "adv_pos_success", "{:.2f}"),
            ("A>0 failure", "adv_pos_failure", "{:.2f}"), ("wall s", "wall_s", "{:.0f}")]
    widths = [max(len(h), 6) for h, _, _ in cols]
    head = " | ".join(f"{h:>{w}}" for (h, _, _), w in zip(cols, widths))
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        cells = []
        for (_, key, fmt), w in zip(cols, widths):
            v = r.get(key)
            cells.append(f"{fmt.format(v):>{w}}" if isinstance(v, (int, float)) and v == v else f"{'-':>{w}}")
        print(" | ".join(cells))
    print(flush=True)


# TrainConfig fields the loop sets itself for every training run (LoopConfig.train_config)
LOOP_OWNED = ("method", "seed", "image_size", "init_only", "policy_config_file", "cache_dir", "value_plots",
              "critic_only_bags")


def build_parser() -> argparse.ArgumentParser:
    from aloe_critic.train import CHOICES

    parser = argparse.ArgumentParser(
        prog="aloe-loop", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Precedence: defaults < --quick < --config YAML (LoopConfig fields and a train: section of\n"
               "aloe-train's fields) < flags. The full config is printed at start and saved as loop_config.json.")
    parser.add_argument("--config", type=Path, help="YAML file with LoopConfig fields (and a train: section)")
    parser.add_argument("--quick", action="store_true",
                        help="a few-minute smoke run: 1 iteration, 3 demos, 2 episodes per phase, short training")
    add_config_arguments(parser, LoopConfig(), {"method": CHOICES["method"]}, exclude=("train",),
                         title="the loop ({name})")
    add_config_arguments(parser, loop_train_config(), CHOICES, exclude=LOOP_OWNED,
                         title="training, as aloe-train ({name}: {doc})")
    parser.add_argument("--train", action="append", default=[], metavar="FIELD=VALUE",
                        help="set an aloe-train TrainConfig field (repeatable), e.g. --train beta=0.2")
    return parser


QUICK = {"iterations": 1, "demo_episodes": 3, "episodes_per_iteration": 2, "eval_episodes": 1, "init_policy_steps": 30,
         "max_steps": 30, "image_size": 32,
         "train": {"policy_steps": 20, "critic_steps": 20, "ensemble_size": 2, "num_policy_samples": 2}}


def config_from_args(args: argparse.Namespace) -> LoopConfig:
    config = LoopConfig()
    layers = [QUICK] if args.quick else []
    if args.config:
        layers.append(yaml.safe_load(args.config.read_text()) or {})
    layers.append({**overrides_from_args(args, config, exclude=("train",)),
                   "train": {**overrides_from_args(args, config.train, exclude=LOOP_OWNED),
                             **{k: yaml.safe_load(v) for k, _, v in (item.partition("=") for item in args.train)}}})
    for layer in layers:
        layer = dict(layer)
        train = layer.pop("train", None) or {}
        apply_overrides(config, layer, exclude=("train",))
        apply_overrides(config.train, train)
    return config


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # SIGTERM (a supervisor, `kill`) stops the nodes too: the finally blocks run as for Ctrl-C.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        LoopRunner(config).run()
    except KeyboardInterrupt:
        print("interrupted: nodes stopped; bags and checkpoints written so far are kept", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"aloe-loop failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
