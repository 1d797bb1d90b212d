from glob import glob

from setuptools import find_packages, setup

package_name = "aloe_critic"

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
    description="ALOE learning core: bags to chunked transitions, ensemble critic for the current policy, advantage-weighted flow matching, baselines, evaluation and bag replay node.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            'aloe-train = aloe_critic.train:main',
            'aloe-evaluate = aloe_critic.evaluate:main',
            'replay_node = aloe_critic.replay_node:main',
        ],
    },
)
