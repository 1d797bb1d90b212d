"""Start a node set of node_sets.py as plain processes (what ``ros2 launch`` would do).

Some machines have no ``launch`` package; the main job and the system tests use this instead,
with the very same parameters YAML as the launch files.

    aloe-bringup sim [--params launch/config/sim.yaml]   # or: python -m aloe_bringup.bringup sim [--set sim_node.episodes=3]

Supervision (the robot is held whenever no valid policy drives it):
* a node other than executor_node that dies is restarted (``--respawn``, default 3 times, 2 s
  apart); meanwhile the executor keeps running and holds, because chunks go stale. A node that
  dies more often than that, or any node with ``--no-respawn``, stops the set: exit status 1.
* executor_node dying stops the set at once (nothing commands the robot any more): exit 1.
* Ctrl-C / SIGTERM stops every other node first and the executor last: its final command is
  its ``hold_command``. Exit 0.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .node_sets import COMMANDER, NODE_SETS, RESPAWN_DELAY_S


def config_file(node_set: str) -> Path:
    """The shipped parameters YAML of a node set: share/aloe_bringup/launch/config/<node_set>.yaml
    of the sourced workspace (the repository's launch/config, symlinked by colcon's
    --symlink-install), where the launch files find it too."""
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

    try:
        share = Path(get_package_share_directory("aloe_bringup"))
    except PackageNotFoundError as exc:
        raise FileNotFoundError("aloe_bringup is not installed: run scripts/setup.sh and source scripts/env.sh"
                                ) from exc
    return share / "launch" / "config" / f"{node_set}.yaml"


def executable(package: str, name: str) -> list[str]:
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        exe = Path(prefix) / "lib" / package / name
        if prefix and exe.is_file():
            return [str(exe)]
    found = shutil.which(name)
    if found:
        return [found]
    raise FileNotFoundError(f"{package}/{name} is not installed: run scripts/setup.sh and source scripts/env.sh")


class _QuotedStrings(yaml.SafeDumper):
    """Every string double-quoted: ROS's parameter parser reads bare ``n`` / ``y`` / ``on`` as
    booleans (YAML 1.1), where PyYAML writes them bare. Quoted, a string stays a string."""


_QuotedStrings.add_representer(str, lambda dumper, data: dumper.represent_scalar("tag:yaml.org,2002:str", data,
                                                                               style='"'))


def dump_params(params: dict) -> str:
    """A parameters dict as ROS parameter YAML, values typed as they were read."""
    return yaml.dump(params, Dumper=_QuotedStrings, sort_keys=False)


def load_params(path: Path, overrides: dict[str, dict] | None = None) -> dict:
    """Parameters YAML (``{node: {ros__parameters: {...}}}``) with per-node overrides merged in."""
    params = yaml.safe_load(Path(path).read_text()) or {}
    for node, values in (overrides or {}).items():
        params.setdefault(node, {}).setdefault("ros__parameters", {}).update(values)
    return params


@dataclass
class NodeProcess:
    name: str
    popen: subprocess.Popen
    log_path: Path
    cmd: list = field(default_factory=list)
    env: dict = field(default_factory=dict)
    restarts: int = 0

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, chars: int = 2000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


@dataclass
class NodeGroup:
    """Running nodes; ``stop()`` ends them all (SIGINT, then SIGKILL after a deadline)."""

    processes: list[NodeProcess] = field(default_factory=list)

    def __getitem__(self, name: str) -> NodeProcess:
        return next(p for p in self.processes if p.name == name)

    def dead(self) -> list[NodeProcess]:
        return [p for p in self.processes if not p.alive()]

    def stop(self, names: list[str] | None = None, timeout: float = 10.0, last: tuple[str, ...] | None = None
             ) -> None:
        """SIGINT the nodes (all, or ``names``), then SIGKILL after ``timeout``; the nodes named in
        ``last`` (default: the commander of node_sets.py) are stopped after the others (the
        executor's final command is a hold)."""
        last = (COMMANDER,) if last is None else last
        targets = [p for p in self.processes if names is None or p.name in names]
        for wave in ([p for p in targets if p.name not in last], [p for p in targets if p.name in last]):
            for p in wave:
                if p.alive():
                    p.popen.send_signal(signal.SIGINT)
            deadline = time.monotonic() + timeout
            for p in wave:
                try:
                    p.popen.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    p.popen.kill()
                    p.popen.wait(5)
        self.processes = [p for p in self.processes if p not in targets]

    def respawn(self, p: NodeProcess) -> NodeProcess:
        """Start a dead node again with the same command line; its log is appended to."""
        popen = subprocess.Popen(p.cmd, stdout=p.log_path.open("a"), stderr=subprocess.STDOUT, start_new_session=True,
                                 preexec_fn=_child_setup, env=p.env)
        new = NodeProcess(p.name, popen, p.log_path, p.cmd, p.env, p.restarts + 1)
        self.processes[self.processes.index(p)] = new
        return new


def _child_setup() -> None:
    """In each node process before exec: SIGINT back to its default (a parent started with `&`
    from a script ignores it, and children inherit that), and on Linux a SIGTERM when the
    parent dies, so a killed loop never leaves orphan nodes commanding the robot."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def start_nodes(entries: list[tuple[str, str, str]], params: dict, log_dir: Path,
                use_sim_time: bool = True, env: dict | None = None, tag: str = "") -> NodeGroup:
    """Start each (package, executable, node name) with ``params`` written to one YAML file."""
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    params_file = log_dir / f"params{tag}.yaml"
    params_file.write_text(dump_params(params))
    group = NodeGroup()
    for package, exe, name in entries:
        cmd = executable(package, exe) + ["--ros-args", "--params-file", str(params_file),
                                           "-r", f"__node:={name}", "-p", f"use_sim_time:={str(use_sim_time).lower()}"]
        log_path = log_dir / f"{name}{tag}.log"
        full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        popen = subprocess.Popen(cmd, stdout=log_path.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
                                 preexec_fn=_child_setup, env=full_env)
        group.processes.append(NodeProcess(name, popen, log_path, cmd, full_env))
    return group


def _parse_overrides(items: list[str]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for item in items:
        key, _, value = item.partition("=")
        node, _, param = key.partition(".")
        if not param or not _:
            raise SystemExit(f"--set expects node.param=value, got {item!r}")
        out.setdefault(node, {})[param] = yaml.safe_load(value)
    return out


def supervise(group: NodeGroup, respawn: int, respawn_delay_s: float | None = None, poll_s: float = 0.2,
              log=print) -> int:
    """Watch the nodes until one fails for good (-> 1) or a signal stops the set (-> 0).

    A dead node other than the executor is restarted up to ``respawn`` times while the executor
    keeps holding the robot; a dead executor, or a node past its restarts, ends the set (the
    rules of node_sets.py, which the launch files follow too)."""
    EXECUTOR = COMMANDER  # noqa: N806 - the one node that commands the robot
    respawn_delay_s = RESPAWN_DELAY_S if respawn_delay_s is None else respawn_delay_s
    stopping = []
    handler = lambda signum, frame: stopping.append(signum)  # noqa: E731
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stopping:
            for p in group.dead():
                code = p.popen.returncode
                log(f"{p.name} exited with {code}; last output:\n{p.tail()}")
                if p.name == EXECUTOR:
                    log(f"{EXECUTOR} is gone: nothing commands the robot any more; stopping every node")
                    return 1
                if p.restarts >= respawn:
                    log(f"{p.name} died {p.restarts + 1} times (respawn limit {respawn}); stopping every node "
                        f"({EXECUTOR} holds the robot until it stops)")
                    return 1
                log(f"restarting {p.name} in {respawn_delay_s:g} s (restart {p.restarts + 1} of {respawn}); "
                    f"{EXECUTOR} holds the robot meanwhile")
                time.sleep(respawn_delay_s)
                group.respawn(p)
            time.sleep(poll_s)
        log(f"signal {signal.Signals(stopping[0]).name}: stopping every node, {EXECUTOR} last (final hold)")
        return 0
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aloe-bringup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("node_set", choices=sorted(NODE_SETS), help="which launch file's node set to start")
    parser.add_argument("--params", type=Path, help="parameters YAML (default: the shipped launch/config/<node_set>.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE",
                        help="override one parameter (repeatable)")
    parser.add_argument("--log-dir", type=Path, default=Path("runs/bringup"), help="where node logs go")
    parser.add_argument("--respawn", type=int, default=3, metavar="N",
                        help="restart a node that dies (not the executor) up to N times; 0 = never")
    args = parser.parse_args(argv)
    params = load_params(args.params or config_file(args.node_set), _parse_overrides(args.set))
    group = start_nodes(NODE_SETS[args.node_set], params, args.log_dir, use_sim_time=args.node_set == "sim")
    print(f"started {[p.name for p in group.processes]}; logs in {args.log_dir}; Ctrl-C stops all", flush=True)
    code = 1
    try:
        code = supervise(group, args.respawn, log=lambda m: print(m, file=sys.stderr, flush=True))
    finally:
        group.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
