"""pip/setuptools install of the Python half of pixloc_ros.

On a ROS 2 install the package is built by colcon through CMakeLists.txt (ament_cmake, because
rosidl generates the messages in msg/); this file serves `pip install -e .` (the project's own
machines, CI) and provides the `pixloc-ros` console command.
"""
from glob import glob

from setuptools import find_packages, setup

package_name = "pixloc_ros"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(include=[package_name, f"{package_name}.*"]),
    package_data={package_name: ["assets/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
        (f"share/{package_name}/launch", glob("launch/*.py")),
        (f"share/{package_name}/config", glob("config/*")),
        (f"share/{package_name}/msg", glob("msg/*.msg")),
    ],
    python_requires=">=3.10",
    install_requires=["numpy", "torch", "scipy", "opencv-python-headless", "pycolmap", "safetensors",
                      "omegaconf", "pymap3d", "rosbags", "tqdm", "pyyaml", "matplotlib"],
    extras_require={"ray": ["ray>=2.9"]},  # build-map --ray (tiles as Ray tasks)
    zip_safe=False,
    maintainer="pixloc_ros developers",
    description="Online 6-DoF relocalization with PixLoc for ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "pixloc-ros = pixloc_ros.cli:main",
            "localizer_node = pixloc_ros.ros.start:main",
        ],
    },
)
