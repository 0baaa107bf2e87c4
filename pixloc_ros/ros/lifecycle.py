"""The node's lifecycle (rclpy's managed nodes, as nav2's AMCL) and the process that runs it.

States, and what the node holds in each (nav2 drives them with ``nav2_lifecycle_manager``, anyone
with ``ros2 lifecycle set /pixloc_localizer <transition>`` or the node's ``~/change_state``):

- unconfigured: parameters declared (a wrong type or an unknown name already ended the process:
  the parameters are read-only, no transition could fix them), nothing loaded.
- configure -> inactive: settings validated, weights and map loaded, every map checksum verified,
  the network warmed up for ``warm_up_size``; publishers created as lifecycle publishers
  (nothing goes out while inactive).
- activate -> active: publishers enabled, then the subscriptions, the worker thread and the
  diagnostics timer created; the tracking starts afresh (a pose from before is stale).
- deactivate -> inactive: subscriptions and timer removed, the frame in progress finishes, then
  the publishers are disabled. The map and the weights stay loaded (activate again is instant).
- cleanup -> unconfigured: publishers destroyed, pipeline closed (map and weights released).
- shutdown -> finalized, from any of the three: all of the above released.

Errors: a setup error in a transition (a missing or damaged map, bad weights, an invalid setting,
``ValueError``/``OSError``/``WeightsError``) returns FAILURE with the reason logged, and the node
stays where it was (a failed configure releases what it loaded: unconfigured). Any other
exception is a bug: logged with its traceback, ERROR; ``on_error`` releases everything and the
node is unconfigured again. The reason of the last failure is ``transition_error``.

``autostart`` (default true) keeps the plain node: ``ros/start.py`` configures and activates it
before it spins, and a failure is one FATAL line and exit status 1, as before the node had a lifecycle.

Bond: nav2's lifecycle manager also watches each node it activated through a bond (bondcpp
heartbeats on ``bond``, 0.1 s period; without them it aborts the bringup after bond_timeout / 2).
rclpy has no bond, released bond_core no ROS 2 bondpy, the PyPI wheels no bond messages: run the
manager with ``bond_timeout: 0.0`` (config/nav2_pixloc.yaml, launch/nav2_localization.launch.py;
README, "nav2").
"""
from __future__ import annotations

import re
import sys
import traceback
from collections.abc import Callable

from rclpy.exceptions import ParameterException
from rclpy.lifecycle.node import LifecycleState, TransitionCallbackReturn

NODE_NAME = "pixloc_localizer"


class ManagedTransitions:
    """The lifecycle callbacks of a ``rclpy.lifecycle.node.LifecycleNode`` subclass, mixed in
    before it. The subclass provides the steps, each of which raises on failure:
    ``configure_resources()``, ``activate_io()``, ``deactivate_io()`` and ``release()`` (undoes
    whatever exists, never raises). Lifecycle publishers are enabled before ``activate_io`` and
    disabled after ``deactivate_io`` (so the frame in progress still publishes)."""

    transition_error: str = ""  # why the last transition failed ("" after a success)
    quiet_failures: bool = False  # autostart: the caller reports a failure (one FATAL line)

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition("configure", self.configure_resources, super().on_configure, state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        def activate():
            self._entities(super(ManagedTransitions, self).on_activate, state)
            try:
                self.activate_io()
            except BaseException:  # back to inactive as it was: nothing subscribed, nothing published
                self.deactivate_io()
                super(ManagedTransitions, self).on_deactivate(state)
                raise
        return self._transition("activate", activate, None, state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition("deactivate", self.deactivate_io, super().on_deactivate, state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition("cleanup", self.release, super().on_cleanup, state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition("shutdown", self.release, super().on_shutdown, state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """After an ERROR: release everything and go back to unconfigured (SUCCESS)."""
        self.release()
        self.get_logger().warning(f"released everything after the error in a transition from {state.label!r}: "
                                  f"unconfigured")
        return TransitionCallbackReturn.SUCCESS

    def _entities(self, step: Callable, state: LifecycleState) -> None:
        """The managed entities' own callbacks (lifecycle publishers); raise unless SUCCESS."""
        ret = step(state)
        if ret != TransitionCallbackReturn.SUCCESS:
            raise RuntimeError(f"a managed entity (lifecycle publisher) returned {ret}")

    def _transition(self, name: str, step: Callable[[], None], entities: Callable | None,
                    state: LifecycleState) -> TransitionCallbackReturn:
        try:
            step()
            if entities is not None:
                self._entities(entities, state)
        except Exception as err:
            if is_setup_error(err):
                self.transition_error = f"{name} failed: {err}"
                if name == "configure":
                    self.release()  # back to unconfigured: nothing half-loaded stays
                if not self.quiet_failures:
                    self.get_logger().error(f"{self.transition_error} (still {state.label})")
                return TransitionCallbackReturn.FAILURE
            self.transition_error = f"{name} failed: {type(err).__name__}: {err}"
            self.get_logger().error(f"{self.transition_error}\n{traceback.format_exc()}")
            return TransitionCallbackReturn.ERROR
        self.transition_error = ""
        done = {"configure": "inactive", "activate": "active", "deactivate": "inactive",
                "cleanup": "unconfigured", "shutdown": "finalized"}[name]
        self.get_logger().info(f"{name}: done, {done}")
        return TransitionCallbackReturn.SUCCESS


def is_setup_error(err: BaseException) -> bool:
    """Bad parameters or files: ValueError (settings, map), OSError (files), rclpy's parameter
    errors, WeightsError. (WeightsError is looked up only once its module was imported, which
    imports torch: a parameter error must not wait seconds for that.)"""
    checkpoint = sys.modules.get("pixloc_ros.core.engine.checkpoint")
    weights_error = (checkpoint.WeightsError,) if checkpoint is not None else ()
    return isinstance(err, (ValueError, OSError, ParameterException, *weights_error))


def rcl_message(err: Exception) -> str:
    """rcl's error text without the C source locations (", at /project/src/rcl/arguments.c:415")."""
    return re.sub(r",? at /\S+:\d+", "", str(err)).strip()
