from glob import glob

from setuptools import find_packages, setup

package_name = "aloe_bringup"

# launch/ is the repository's top-level launch folder (a symlink here), installed so that
# `ros2 launch aloe_bringup robot.launch.py` works from a colcon workspace; each launch file finds
# its YAML in config/ next to it, in the repository and in share/aloe_bringup/launch alike.
setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/launch/config", glob("launch/config/*.yaml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="ALOE maintainers",
    maintainer_email="maintainers@aloe-robotics.org",
    description="Bringing ALOE up: node sets and launch files, the process launcher, the main job and its report.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "aloe-loop = aloe_bringup.loop:main",
            "aloe-bringup = aloe_bringup.bringup:main",
        ],
    },
)
