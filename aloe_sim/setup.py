from glob import glob

from setuptools import find_packages, setup

package_name = "aloe_sim"

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
    description="Simulated Panda pick-cube robot (gym-hil / MuJoCo) behind robot topics, and the scripted operator (the main job lives in aloe_bringup).",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            'sim_node = aloe_sim.sim_node:main',
            'operator_node = aloe_sim.operator_node:main',
        ],
    },
)
