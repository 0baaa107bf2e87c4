#!/usr/bin/env bash
# Set up everything pixloc_ros needs on a fresh machine of the project's kind (Debian, Python >= 3.10,
# no ROS apt packages): .venv/ at the repo root with torch, pycolmap, the ROS 2 Kilted wheels from
# PyPI, the generated messages (pixloc_ros/msg, and tf2_msgs which has no wheel) and this package
# (editable), and the package's share/ and lib/ files where launch_ros and `ros2 run` look for them
# (scripts/install_ros_files.sh: `ros2 launch pixloc_ros localize.launch.py` works from the venv as
# after `colcon build`). Idempotent: a second run checks a stamp, refreshes those links and returns in
# well under a second.
#
# usage: scripts/setup.sh [--force]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.pixloc_ros_setup_stamp"
cd "$ROOT"

fail() { echo "setup: ERROR: $*" >&2; exit 1; }

# The stamp holds a hash of every input of the set-up: when none changed, nothing is redone.
inputs_hash() {
  cat requirements/*.txt setup.py package.xml CMakeLists.txt msg/*.msg third_party/tf2_msgs/msg/*.msg \
      scripts/setup.sh scripts/fix_wheel_cmake_paths.py scripts/install_ros_files.sh | sha256sum | cut -d' ' -f1
}

if [[ "${1:-}" != "--force" && -f "$STAMP" && "$(cat "$STAMP")" == "$(inputs_hash)" ]]; then
  # Launch and config files added since the last run get their links too (a few ms).
  exec "$ROOT/scripts/install_ros_files.sh" "$VENV"
fi

# --- tools the build needs --------------------------------------------------------------------
PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
  for candidate in python3.11 python3.12 python3.10 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PYTHON="$candidate"; break; fi
  done
fi
[[ -n "$PYTHON" ]] || fail "no python3 found; install Python 3.10-3.12 (the ROS 2 wheels exist for cp310-cp313)"
"$PYTHON" -c 'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 13) else 1)' \
  || fail "$PYTHON is $("$PYTHON" --version 2>&1); the ROS 2 wheels need Python 3.10-3.13"
for tool in cmake g++ make; do
  command -v "$tool" >/dev/null 2>&1 || fail "'$tool' not found: the messages are generated with CMake (apt install cmake g++ make)"
done
[[ "$(uname -m)" == "x86_64" ]] || fail "the ROS 2 wheels on PyPI are x86_64 only; on $(uname -m) install ROS 2 from its packages"

# --- virtualenv and wheels ---------------------------------------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
  echo "setup: creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV" || fail "could not create the virtualenv (apt install python3-venv?)"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
echo "setup: installing Python packages (torch CPU build, pycolmap, ROS 2 Kilted wheels, OpenVINO, triton) ..."
python -m pip install -q --disable-pip-version-check \
  -r requirements/core.txt -r requirements/test.txt -r requirements/accel.txt \
  -r requirements/ros-runtime.txt -r requirements/ros-build.txt \
  || fail "pip install failed (see above); the package registry must be reachable"

# --- messages ----------------------------------------------------------------------------------
# shellcheck disable=SC1091
source "$ROOT/scripts/ros_env.sh"
python scripts/fix_wheel_cmake_paths.py
SITE="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
build_msgs() {  # build_msgs SRC_DIR [cmake args...]: configure, build, install into the venv prefix
  local src="$1"; shift
  local bld; bld="$(mktemp -d)"
  if ! { cmake -S "$src" -B "$bld" -DCMAKE_INSTALL_PREFIX="$VENV" -DCMAKE_PREFIX_PATH="$VENV" \
           -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$VENV/bin/python" "$@" \
         && cmake --build "$bld" -j"$(nproc)" && cmake --install "$bld"; } >"$bld.log" 2>&1; then
    tail -40 "$bld.log" >&2
    fail "building the messages of $src failed (full log: $bld.log)"
  fi
  rm -rf "$bld" "$bld.log"
}
if ! python -c 'import tf2_msgs.msg' 2>/dev/null; then
  echo "setup: generating tf2_msgs (no wheel on PyPI) ..."
  build_msgs third_party/tf2_msgs
fi
echo "setup: generating pixloc_ros messages ..."
build_msgs "$ROOT" -DPIXLOC_ROS_INSTALL_PYTHON=OFF
# rosidl installs a regular package pixloc_ros/ (its own __init__.py) into site-packages. Remove
# that __init__.py so the directory is a namespace portion: the sources' package (editable
# install) is then the one imported, and its extend_path() adds the generated msg/ subpackage.
rm -f "$SITE/pixloc_ros/__init__.py"
# rosidl also registers an egg-info named pixloc_ros: pip would take the generated files for an
# older install of this package and delete them when installing the sources below.
rm -rf "$SITE"/pixloc_ros-*.egg-info

# --- this package ------------------------------------------------------------------------------
# compat mode puts the repo root on sys.path (a .pth), which extend_path needs; the default
# editable finder would lose against the namespace portion in site-packages.
python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation \
  -e . --config-settings editable_mode=compat || fail "pip install -e . failed"

python -c 'import rclpy, tf2_msgs.msg, pixloc_ros.msg; from pixloc_ros.msg import LocalizationStatus' \
  || fail "the generated messages do not import; rerun with: scripts/setup.sh --force"
# share/pixloc_ros (launch, config, package.xml), lib/pixloc_ros/<executables>, the ament index marker.
"$ROOT/scripts/install_ros_files.sh" "$VENV" || fail "installing the launch and config files into $VENV failed"
inputs_hash >"$STAMP"
echo "setup: done ($VENV)"
