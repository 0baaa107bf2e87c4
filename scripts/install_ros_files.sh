#!/usr/bin/env bash
# Lay out pixloc_ros in an ament prefix as `colcon build` installs it, for launch_ros and `ros2 run`:
#   PREFIX/share/pixloc_ros/{launch,config}/* -> links to this checkout's files (edits apply at once,
#                                               as with colcon --symlink-install; links per file, since
#                                               ros2launch's os.walk does not enter linked folders)
#   PREFIX/share/pixloc_ros/package.xml       (a copy)
#   PREFIX/lib/pixloc_ros/{localizer_node,pixloc-ros} -> links to BIN_DIR's console scripts (pip's,
#                                               which run this checkout's sources with the venv's Python)
#   PREFIX/share/ament_index/resource_index/packages/pixloc_ros  (the marker ament_index looks for)
# scripts/setup.sh runs it with the virtualenv as PREFIX (AMENT_PREFIX_PATH, scripts/ros_env.sh).
# Idempotent and quick (links and one copy).
#
# usage: scripts/install_ros_files.sh PREFIX [BIN_DIR (default PREFIX/bin)]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="${1:?usage: $0 PREFIX [BIN_DIR]}"
BIN="${2:-$PREFIX/bin}"
PKG=pixloc_ros
mkdir -p "$PREFIX/share/$PKG" "$PREFIX/lib/$PKG" "$PREFIX/share/ament_index/resource_index/packages"
for dir in launch config; do
  dest="$PREFIX/share/$PKG/$dir"
  [[ -L "$dest" ]] && rm -f "$dest"
  mkdir -p "$dest"
  find "$dest" -maxdepth 1 -type l ! -exec test -e {} \; -delete  # links to files removed since
  for file in "$ROOT/$dir"/*; do
    [[ -f "$file" ]] && ln -sf "$file" "$dest/$(basename "$file")"
  done
done
cp -f "$ROOT/package.xml" "$PREFIX/share/$PKG/package.xml"
for exe in localizer_node pixloc-ros; do
  [[ -x "$BIN/$exe" ]] || { echo "install_ros_files: $BIN/$exe missing (pip install -e . first)" >&2; exit 1; }
  ln -sf "$BIN/$exe" "$PREFIX/lib/$PKG/$exe"
done
touch "$PREFIX/share/ament_index/resource_index/packages/$PKG"
