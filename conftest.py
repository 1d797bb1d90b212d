"""Shared pytest set-up for every package's tests and the system tests.

* Each test session gets its own ROS domain (``ALOE_TEST_DOMAIN_ID`` or a random one) and
  localhost-only discovery, so concurrent test runs on one machine never see each other.
* ``ros_node_process`` starts a node from its console entry point with a parameters YAML,
  as the launch files would, and always stops it (SIGINT, then SIGKILL) at teardown.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("ALOE_TEST_DOMAIN_ID", str(random.Random().randint(1, 100)))
os.environ["ROS_DOMAIN_ID"] = os.environ["ALOE_TEST_DOMAIN_ID"]
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # Jazzy and newer
os.environ.setdefault("ROS_LOCALHOST_ONLY", "1")  # Humble
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")


class NodeProcess:
    """One node running in its own process; ``log()`` returns its output so far."""

    def __init__(self, popen: subprocess.Popen, log_path: Path, name: str):
        self.popen = popen
        self.log_path = log_path
        self.name = name

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, text: str, timeout: float = 30.0) -> str:
        """Block until ``text`` appears in the node's output; fail with the log otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.log()
            if text in out:
                return out
            if self.popen.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{self.name}: {text!r} not seen within {timeout}s "
                             f"(exit code {self.popen.poll()}); log:\n{self.log()[-4000:]}")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode

    def kill(self) -> None:
        """SIGKILL, no clean-up possible: what a crash looks like."""
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(5)


def executable_of(package: str, name: str) -> list[str]:
    """The command that runs a console entry point (installed, else ``python -m``)."""
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        exe = Path(prefix) / "lib" / package / name
        if exe.is_file():
            return [str(exe)]
    found = shutil.which(name)
    if found:
        return [found]
    raise FileNotFoundError(f"entry point {package}/{name} not installed: run scripts/setup.sh")


@pytest.fixture
def node_executable():
    """``executable_of(package, name)`` as a fixture: test modules must not ``import conftest``
    (several conftest.py files exist, and which one that name means depends on test order)."""
    return executable_of


@pytest.fixture
def ros_node_process(tmp_path):
    """Factory: ``start(package, executable, params: dict, node_name, args=[])`` -> NodeProcess."""
    started: list[NodeProcess] = []

    def start(package: str, executable: str, params: dict | None = None, node_name: str | None = None,
              args: list[str] | None = None, env: dict | None = None) -> NodeProcess:
        node_name = node_name or executable
        cmd = executable_of(package, executable) + list(args or [])
        ros_args = []
        if params is not None:
            yaml_path = tmp_path / f"{node_name}_{len(started)}.yaml"
            yaml_path.write_text(yaml.safe_dump({node_name: {"ros__parameters": params}}))
            ros_args += ["--params-file", str(yaml_path)]
        ros_args += ["-r", f"__node:={node_name}"]
        cmd += ["--ros-args", *ros_args]
        log_path = tmp_path / f"{node_name}_{len(started)}.log"
        full_env = dict(os.environ, PYTHONUNBUFFERED="1", RCUTILS_LOGGING_BUFFERED_STREAM="0")
        full_env.update(env or {})
        popen = subprocess.Popen(cmd, stdout=log_path.open("w"), stderr=subprocess.STDOUT,
                                 env=full_env, start_new_session=True)
        proc = NodeProcess(popen, log_path, node_name)
        started.append(proc)
        return proc

    yield start
    for proc in reversed(started):
        proc.stop()
    failed = [p for p in started if p.popen.returncode not in (0, -signal.SIGINT, -signal.SIGKILL, 130)]
    for p in failed:
        sys.stderr.write(f"--- {p.name} exited {p.popen.returncode}; log:\n{p.log()[-3000:]}\n")
