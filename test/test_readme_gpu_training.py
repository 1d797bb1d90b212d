"""README "Training on a GPU workstation or cluster": the documented hand-back works as written.

The rclpy LoadPolicy snippet is taken from the README verbatim (only the checkpoint path is
replaced) and run as its own process against a running policy_node. (The torchrun command is
exercised by aloe_critic/test/test_distributed.py; the `ros2 service call` line needs ros2cli,
which PyPI ROS does not ship: its YAML request is checked against the service type here.)
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rclpy")
from test_fault_injection import POLICY_PARAMS, save_tiny_checkpoint  # noqa: E402

pytestmark = pytest.mark.system

README = Path(__file__).resolve().parents[1] / "README.md"
DOC_PATH = "/home/robot/aloe/ckpt/iter_04"


def section() -> str:
    text = README.read_text()
    return text.split("## Training on a GPU workstation or cluster")[1].split("\n## ")[0]


def test_readme_rclpy_load_policy_snippet_hot_loads_a_checkpoint(ros_node_process, tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", section(), re.S)
    assert len(blocks) == 1 and DOC_PATH in blocks[0]
    snippet = "\n".join(line[3:] if line.startswith("   ") else line for line in blocks[0].splitlines())
    old_id = save_tiny_checkpoint(tmp_path / "running", 1)
    new_id = save_tiny_checkpoint(tmp_path / "iter_04", 5)
    policy = ros_node_process("aloe_policy", "policy_node", {**POLICY_PARAMS, "checkpoint": str(tmp_path / "running")})
    policy.wait_for_log(f"loaded policy {old_id}")
    script = tmp_path / "load_policy_client.py"
    script.write_text(snippet.replace(DOC_PATH, str(tmp_path / "iter_04")))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"success=True policy_id={new_id}: loaded policy {new_id}" in proc.stdout, proc.stdout
    policy.wait_for_log(f"replaced {old_id}")


def test_readme_ros2_service_call_line_names_the_service_type_and_request_field():
    from aloe_msgs.srv import LoadPolicy

    line = next(l for l in section().splitlines() if "ros2 service call" in l)
    match = re.search(r"ros2 service call (\S+) (\S+) \"\{(\w+): (\S+)\}\"", line)
    assert match, line
    service, srv_type, field, value = match.groups()
    assert service == "/aloe/load_policy" and srv_type == "aloe_msgs/srv/LoadPolicy" and value == DOC_PATH
    assert field in LoadPolicy.Request.get_fields_and_field_types()
