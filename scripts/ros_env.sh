# Source after activating .venv: makes the ROS 2 wheels usable without their re-exec trick.
# Deterministic LD_LIBRARY_PATH (keeps an existing order, which matters beside CUDA), ament index
# pointing at the venv, DDS discovery on loopback unless the caller chose otherwise.
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
unset _PIXLOC_SP _PIXLOC_LIBS _d
