from glob import glob

from setuptools import find_packages, setup

package_name = "aloe_policy"

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
    description="Flow-matching VLA policy (ROS-free model core), asynchronous inference node and action executor node.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            'policy_node = aloe_policy.policy_node:main',
            'executor_node = aloe_policy.executor_node:main',
            'aloe-serve-policy = aloe_policy.backends.openpi_remote:main',
        ],
        "aloe_policy.backends": [
            "flow_matching = aloe_policy.backends:load_flow_matching",
            "openpi_remote = aloe_policy.backends.openpi_remote:load_openpi_remote",
        ],
    },
)
