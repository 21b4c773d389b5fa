"""The zero-code trampoline on MLflow's ``create_run``, and whether autolog's choice is made.

Zero-code mode (``MLFLOW_GREEN_AUTOLOG=true``) installs autolog on the first
``create_run``; a program that calls ``autolog()`` itself makes the choice
instead, and the environment no longer applies. This module holds that
choice (:data:`done`) and the trampoline; it imports nothing but the standard
library, since the plugin that arms it loads while ``import mlflow`` runs.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable

CLIENT_MODULE = "mlflow.tracking._tracking_service.client"
#: The environment's choice was applied, or the program chose itself.
done = False
_armed: tuple | None = None  # (TrackingServiceClient, original create_run, trampoline)
# Set while this thread is inside the trampoline: a call that comes back into it (through a
# wrapper that autolog() put around it) goes straight to MLflow, never round again.
_local = threading.local()
#: Held while autolog is installed from the environment (re-entrant: the install may
#: create a run of its own on the same thread).
install_lock = threading.RLock()


def settle() -> None:
    """The choice is made: the environment's (applied once) or the program's own ``autolog()``
    call (even ``disable=True``), which then stands.

    The environment variable then never switches tracking on (or back on) by itself,
    and MLflow's ``create_run`` gets back the function the trampoline replaced.
    """
    global done
    with install_lock:
        done = True
        disarm()


def arm(install: Callable[[], None]) -> None:
    """Call ``install`` (autolog from the environment) on the first ``create_run``, by anyone.

    MLflow builds the plugin's provider while ``mlflow.tracking.fluent`` is half imported,
    too early for ``autolog()``; but ``TrackingServiceClient`` is already loaded
    (fluent imports the client first), so a one-shot trampoline on its
    ``create_run`` also catches scripts that never call ``mlflow.start_run``.

    The trampoline only ever calls forward: the ``create_run`` it replaced, or, on
    the call that installs autolog, autolog's wrapper around that same function.
    ``autolog()`` may already have wrapped the trampoline itself (it was called
    before the first run), or wrapped it and been disabled again, or MLflow may
    build its providers anew: in every order a call reaches MLflow exactly once.
    """
    global _armed
    module = sys.modules.get(CLIENT_MODULE)
    if module is None or _armed is not None or done:
        return
    cls = module.TrackingServiceClient
    original = cls.__dict__["create_run"]

    def create_run(self: object, *args: object, **kwargs: object) -> object:
        if getattr(_local, "inside", False) or cls.__dict__.get("create_run") is not create_run:
            return original(self, *args, **kwargs)  # reached through a wrapper around us
        _local.inside = True
        try:
            install()  # autolog wraps this trampoline, or ``original`` once disarmed
            now = cls.__dict__.get("create_run")
            target = original if now is None or now is create_run else now
            return target(self, *args, **kwargs)
        finally:
            _local.inside = False

    cls.create_run = create_run
    _armed = (cls, original, create_run)


def disarm() -> None:
    """Give MLflow's ``create_run`` back its own function, if the trampoline is still on it."""
    global _armed
    if _armed is not None:
        cls, original, trampoline = _armed
        if cls.__dict__.get("create_run") is trampoline:
            cls.create_run = original
        _armed = None


def _new_lock_after_fork() -> None:
    # A child forked while another thread installed the hooks would wait for good on a
    # lock that no thread of it holds.
    global install_lock
    install_lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_after_fork)
