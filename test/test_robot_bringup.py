"""The documented robot bringup (`aloe-bringup robot`, the shipped robot.yaml
unchanged) starts every node, keeps the robot held through a policy_node crash and restarts it,
stops with a final hold, and exits non-zero when the executor dies."""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy")

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[1]
NODES = ("policy_node", "executor_node", "teleop_node", "recorder_node")


def wait_for(predicate, timeout, what, log_dir=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    logs = "".join(f"\n--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted(Path(log_dir).glob("*.log"))) \
        if log_dir else ""
    raise AssertionError(f"timed out waiting for {what}{logs}")


def node_pids(name: str, log_dir, parent: int | None) -> list[int]:
    """PIDs of the live processes that the bringup ``parent`` (logging to ``log_dir``) started as
    node ``name``. Its own children only: another test's node of that name, still exiting, must not
    pass for a restart, nor may a node's short-lived fork (a fork carries its parent's command line
    until it execs), which once did in CI: the test killed the fork, saw the node "restarted", and
    stopped the bringup before it had noticed anything. ``parent=None``: any parent (a node orphaned
    by its bringup counts too)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().split(b"\0")
                status = dict(line.split(":", 1) for line in (d / "status").read_text().splitlines() if ":" in line)
            except OSError:
                continue
            if f"__node:={name}".encode() in cmd and str(log_dir).encode() in b" ".join(cmd) \
                    and parent in (None, int(status["PPid"])) and "zombie" not in status["State"]:
                out.append(int(d.name))
    return out


@pytest.fixture
def bringup(tmp_path):
    procs = []

    def start(*extra):
        log_dir = tmp_path / "logs"
        proc = subprocess.Popen(
            [shutil.which("aloe-bringup"), "robot", "--log-dir", str(log_dir),  # as the README starts it
             "--set", f"recorder_node.output_dir={tmp_path / 'bags'}", *extra],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=dict(os.environ, ROS_DOMAIN_ID=str(40 + os.getpid() % 50)))
        procs.append(proc)
        return proc, log_dir

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def all_up(proc, log_dir):
    return all(node_pids(n, log_dir, proc.pid) for n in NODES) and all(
        (Path(log_dir) / f"{n}.log").exists() and ("ready" in (Path(log_dir) / f"{n}.log").read_text()
                                                   or "started" in (Path(log_dir) / f"{n}.log").read_text())
        for n in ("policy_node", "executor_node"))


def test_robot_bringup_with_the_shipped_yaml_starts_every_node_and_survives_a_policy_crash(bringup):
    proc, log_dir = bringup()
    wait_for(lambda: all_up(proc, log_dir) or proc.poll() is not None, 90, "every node up", log_dir)
    assert proc.poll() is None, proc.stdout.read()
    time.sleep(3.0)  # a node that dies on its parameters does so within a second or two
    assert proc.poll() is None and all(node_pids(n, log_dir, proc.pid) for n in NODES), \
        "a node died with the shipped robot.yaml"
    teleop = (Path(log_dir) / "teleop_node.log").read_text()
    assert "InvalidParameterType" not in teleop and "Traceback" not in teleop

    executor = node_pids("executor_node", log_dir, proc.pid)
    (policy,) = node_pids("policy_node", log_dir, proc.pid)  # the bringup's child: the node itself
    os.kill(policy, signal.SIGKILL)
    restarted = lambda: [p for p in node_pids("policy_node", log_dir, proc.pid) if p != policy]  # noqa: E731
    wait_for(restarted, 60, "policy_node restarted", log_dir)
    assert node_pids("executor_node", log_dir, proc.pid) == executor, \
        "the executor kept running (holding) through the crash"
    assert proc.poll() is None

    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "restarting policy_node" in out, out + (Path(log_dir) / "policy_node.log").read_text()[-3000:]
    assert "executor shutting down (SIGINT)" in (Path(log_dir) / "executor_node.log").read_text()
    assert not any(node_pids(n, log_dir, None) for n in NODES)


def test_robot_bringup_exits_non_zero_when_the_executor_dies(bringup):
    proc, log_dir = bringup()
    wait_for(lambda: all_up(proc, log_dir) or proc.poll() is not None, 90, "every node up", log_dir)
    os.kill(node_pids("executor_node", log_dir, proc.pid)[0], signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out
    assert "executor_node is gone" in out
    assert not any(node_pids(n, log_dir, None) for n in NODES)
