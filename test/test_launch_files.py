"""Launch files, their node sets and their YAMLs agree; the launch files load where `launch` exists."""

import importlib.util
from pathlib import Path

import pytest
import yaml

from aloe_bringup.bringup import config_file, executable
from aloe_bringup.node_sets import NODE_SETS

LAUNCH = Path(__file__).resolve().parents[1] / "launch"


@pytest.mark.parametrize("set_name", ["robot", "sim", "replay"])
def test_every_node_of_a_set_is_installed_and_configured(set_name):
    params = yaml.safe_load((LAUNCH / "config" / f"{set_name}.yaml").read_text())
    for package, exe, name in NODE_SETS[set_name]:
        assert Path(executable(package, exe)[0]).exists()
        assert "ros__parameters" in params.get(name, {}), f"{set_name}.yaml has no section for {name}"


@pytest.mark.parametrize("set_name", ["robot", "sim", "replay"])
def test_launch_file_describes_the_node_set(set_name):
    pytest.importorskip("launch", reason="the ROS 2 `launch` package is not installed here (no PyPI wheel); "
                                         "nodes are started by aloe-bringup instead")
    pytest.importorskip("launch_ros", reason="launch_ros is not installed here")
    from launch_ros.actions import Node

    spec = importlib.util.spec_from_file_location(f"{set_name}_launch", LAUNCH / f"{set_name}.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    nodes = [e for e in description.entities if isinstance(e, Node)]
    assert len(nodes) == len(NODE_SETS[set_name])


@pytest.mark.parametrize("set_name", ["robot", "sim", "replay"])
def test_launch_files_and_yamls_are_installed_with_aloe_bringup(set_name):
    """`ros2 launch aloe_bringup <set>.launch.py` in a colcon workspace: the launch file and, next to
    it, config/<set>.yaml in the package's share folder, the same files as the repository's launch/."""
    from ament_index_python.packages import get_package_share_directory

    share = Path(get_package_share_directory("aloe_bringup")) / "launch"
    assert (share / f"{set_name}.launch.py").read_text() == (LAUNCH / f"{set_name}.launch.py").read_text()
    assert config_file(set_name) == share / "config" / f"{set_name}.yaml"
    assert config_file(set_name).read_text() == (LAUNCH / "config" / f"{set_name}.yaml").read_text()
