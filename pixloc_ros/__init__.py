"""pixloc_ros: online 6-DoF relocalization with PixLoc for ROS 2.

The generated message types (``pixloc_ros.msg``) are installed by rosidl into another
directory than these sources when the package is installed with pip (editable) next to a
CMake-built message package; ``extend_path`` lets Python find both halves.
"""
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
__version__ = "0.1.0"
