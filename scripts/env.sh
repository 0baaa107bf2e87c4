# Source from anywhere: activates the project's .venv with the ROS 2 environment (run setup first).
_PIXLOC_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
source "$_PIXLOC_ROOT/.venv/bin/activate"
# shellcheck disable=SC1091
source "$_PIXLOC_ROOT/scripts/ros_env.sh"
unset _PIXLOC_ROOT
