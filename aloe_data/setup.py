from setuptools import find_packages, setup

package_name = "aloe_data"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="ALOE maintainers",
    maintainer_email="maintainers@aloe-robotics.org",
    description="ROS-free data contract of the ALOE suite: the schema module and message <-> observation conversion.",
    license="Apache-2.0",
)
