# Source after activating .venv: makes the ROS 2 wheels usable without their re-exec trick.
# Deterministic LD_LIBRARY_PATH (keeps an existing order, which matters beside CUDA), ament index
# pointing at the venv, DDS discovery on loopback unless the caller chose otherwise (both the variable
# Humble reads and the one later distros read).
_PIXLOC_SP="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
_PIXLOC_LIBS="$VIRTUAL_ENV/lib"
for _d in "$_PIXLOC_SP"/ros_*.libs; do [ -d "$_d" ] && _PIXLOC_LIBS="$_PIXLOC_LIBS:$_d"; done
case ":${LD_LIBRARY_PATH:-}:" in
  *":$VIRTUAL_ENV/lib:"*) ;;
  *) export LD_LIBRARY_PATH="$_PIXLOC_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;;
esac
export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1
case ":${AMENT_PREFIX_PATH:-}:" in
  *":$VIRTUAL_ENV:"*) ;;
  *) export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}" ;;
esac
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
# Humble's rcl reads only ROS_LOCALHOST_ONLY; Kilted ignores it; Iron/Jazzy honour both but warn about
# the old one, so it is left out there (pixloc_ros/ros/compat.py, loopback_dds_env, does the same).
if [ "$ROS_AUTOMATIC_DISCOVERY_RANGE" = "LOCALHOST" ]; then
  case "${ROS_DISTRO:-}" in
    iron|jazzy) ;;
    *) export ROS_LOCALHOST_ONLY="${ROS_LOCALHOST_ONLY:-1}" ;;
  esac
fi
unset _PIXLOC_SP _PIXLOC_LIBS _d
