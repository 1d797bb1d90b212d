"""bringup: node processes never outlive a killed parent, and SIGINT works in them."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import yaml

from aloe_bringup.bringup import _parse_overrides, load_params

CHILD = textwrap.dedent("""
    import signal, subprocess, time
    from aloe_bringup import bringup
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # as under `cmd &` in a script
    p = subprocess.Popen(["sleep", "60"], preexec_fn=bringup._child_setup)
    print(p.pid, flush=True)
    time.sleep(60)
""")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return "zombie" not in fh.read()
    except FileNotFoundError:
        return False


def test_nodes_die_with_a_killed_parent():
    parent = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert _alive(child)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "node process outlived its killed parent"


def test_sigint_is_restored_in_node_processes():
    parent = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        os.kill(child, signal.SIGINT)
        deadline = time.monotonic() + 5
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child), "SIGINT ignored by the node process"
    finally:
        parent.kill()
        parent.wait()


def test_params_overrides_merge_per_node(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"sim_node": {"ros__parameters": {"episodes": 0, "seed": 1}}}))
    params = load_params(path, _parse_overrides(["sim_node.episodes=3", "recorder_node.output_dir=/tmp/x"]))
    assert params["sim_node"]["ros__parameters"] == {"episodes": 3, "seed": 1}
    assert params["recorder_node"]["ros__parameters"] == {"output_dir": "/tmp/x"}
