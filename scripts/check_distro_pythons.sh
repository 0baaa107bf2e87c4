#!/usr/bin/env bash
# The ROS-free tests and the image conversions under the Python, numpy, OpenCV and scipy that ROS 2
# users get from apt: Humble (Ubuntu 22.04: Python 3.10, numpy 1.21.5, OpenCV 4.5.4, scipy 1.8.0)
# and Jazzy (Ubuntu 24.04: Python 3.12, numpy 1.26.4, OpenCV 4.6.0, scipy 1.11.4).
#
# usage: scripts/check_distro_pythons.sh [humble] [jazzy]      (default: both)
#
# Each distro gets a virtualenv in .venv-compat/<distro> (gitignored; PIXLOC_COMPAT_VENVS moves it),
# made from requirements/distro-<distro>.txt and reused while that file, distro-common.txt and this
# script are unchanged. The interpreter: $PIXLOC_PYTHON_<distro> (e.g. PIXLOC_PYTHON_HUMBLE), else
# python3.10 / python3.12 on PATH, else pyenv's. No torch there (none for the CPU on PyPI for these
# Pythons), so the subset below is the tests that need none. Exit 0: all passed; 1: a test or an
# install failed; 3: an interpreter is missing (nothing was run for that distro).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENVS="${PIXLOC_COMPAT_VENVS:-$ROOT/.venv-compat}"
# ROS-free modules whose behaviour depends on numpy/OpenCV/scipy/Python, plus the image conversions.
TESTS=(test/test_distro_deps.py test/test_ros_conversions.py test/test_covariance_calibration.py
       test/test_georef.py test/test_mapfile.py test/test_metrics.py test/test_import_gnss.py
       test/test_ros_stamps.py test/test_ros_health.py test/test_ros_worker.py)

declare -A PYVER=([humble]=3.10 [jazzy]=3.12)

find_python() {  # find_python DISTRO -> path of a working interpreter of that distro's Python version
  local ver="${PYVER[$1]}" var="PIXLOC_PYTHON_${1^^}" candidate
  # pyenv's shims on PATH exist for every version but fail unless it is selected: run each candidate.
  for candidate in ${!var:-} "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$ver".*/bin/python"$ver" \
                   "$(command -v "python$ver" 2>/dev/null)"; do
    if [[ -x "$candidate" ]] && "$candidate" -c "import sys; sys.exit(sys.version.startswith('$ver.') is False)" \
         >/dev/null 2>&1; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

check() {  # check DISTRO: (re)build its venv when needed, run the tests; returns 0/1/3
  local distro="$1" python venv stamp want started
  if ! python="$(find_python "$distro")"; then
    echo "check_distro_pythons: $distro: no Python ${PYVER[$distro]} found (install it, or set PIXLOC_PYTHON_${distro^^})"
    return 3
  fi
  venv="$VENVS/$distro"
  stamp="$venv/.pixloc_ros_stamp"
  want="$("$python" --version 2>&1) $(cat "$ROOT/requirements/distro-common.txt" "$ROOT/requirements/distro-$distro.txt" \
          "$ROOT/scripts/check_distro_pythons.sh" | sha256sum | cut -d' ' -f1)"
  if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    started=$SECONDS
    rm -rf "$venv"
    "$python" -m venv "$venv" || { echo "check_distro_pythons: $distro: cannot create $venv"; return 1; }
    # Without the caller's PYTHONPATH: pip counts what it can import as installed (a folder of
    # packages on PYTHONPATH left pytest's pygments out of the venv, which the tests then lacked).
    if ! env -u PYTHONPATH -u PYTHONHOME "$venv/bin/python" -m pip install -q --disable-pip-version-check \
         -r "$ROOT/requirements/distro-$distro.txt" 2> >(grep -v "^WARNING: Location" >&2); then
      echo "check_distro_pythons: $distro: pip install failed (see above)"
      return 1
    fi
    echo "$want" >"$stamp"
    echo "check_distro_pythons: $distro: built $venv in $((SECONDS - started)) s ($(du -sh "$venv" | cut -f1))"
  fi
  started=$SECONDS
  # A clean environment of that venv's own (the caller's may be the project's .venv).
  (
    unset PYTHONPATH LD_LIBRARY_PATH AMENT_PREFIX_PATH VIRTUAL_ENV PYTHONHOME
    # shellcheck disable=SC1091
    source "$venv/bin/activate"
    # shellcheck disable=SC1091
    source "$ROOT/scripts/ros_env.sh"
    export PYTHONPATH="$ROOT"
    cd "$ROOT" || exit 1
    python -c 'import sys, numpy, cv2, scipy; print(f"check_distro_pythons: '"$distro"': Python {sys.version.split()[0]}, numpy {numpy.__version__}, OpenCV {cv2.__version__}, scipy {scipy.__version__}")'
    python -m pytest -q -p no:cacheprovider "${TESTS[@]}"
  )
  local rc=$?
  echo "check_distro_pythons: $distro: tests $([[ $rc == 0 ]] && echo passed || echo FAILED) in $((SECONDS - started)) s"
  return $(( rc == 0 ? 0 : 1 ))
}

distros=("$@")
[[ ${#distros[@]} -gt 0 ]] || distros=(humble jazzy)
status=0
for distro in "${distros[@]}"; do
  [[ -n "${PYVER[$distro]:-}" ]] || { echo "check_distro_pythons: unknown distro $distro (humble, jazzy)"; exit 1; }
  check "$distro"
  rc=$?
  if [[ $rc == 1 ]]; then status=1; elif [[ $rc == 3 && $status == 0 ]]; then status=3; fi
done
exit $status
