from glob import glob

from setuptools import find_packages, setup

package_name = "aloe_teleop"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/config", glob("config/*.yaml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="ALOE maintainers",
    maintainer_email="maintainers@aloe-robotics.org",
    description="Operator takeover devices, episode labelling and the rosbag2 MCAP recorder.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            'teleop_node = aloe_teleop.teleop_node:main',
            'recorder_node = aloe_teleop.recorder_node:main',
        ],
    },
)
