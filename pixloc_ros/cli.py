"""The ``pixloc-ros`` console command: dispatches to ``pixloc_ros.commands.<name>``.

Sub-command modules are imported lazily-ish: each must import its heavy dependencies
(torch, rclpy, pycolmap) inside its ``run`` function so that ``pixloc-ros --help`` is fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from pixloc_ros.commands import COMMAND_MODULES


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every available sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="pixloc-ros",
        description="PixLoc relocalization for ROS 2: data, maps, weights, evaluation, replay.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"pixloc_ros.commands.{name}")
        except ModuleNotFoundError as err:
            # A command whose module is not written yet simply does not exist; a missing
            # third-party dependency inside an existing module is a real error.
            if err.name == f"pixloc_ros.commands.{name}":
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
