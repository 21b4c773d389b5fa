"""Warnings that can never raise into the user's code."""

from __future__ import annotations

import logging
import warnings

_log = logging.getLogger("mlflow_green")


def warn(message: str, category: type[Warning] = UserWarning, stacklevel: int = 2) -> None:
    """``warnings.warn`` that falls back to the log instead of raising.

    Under ``python -W error`` or pytest's ``filterwarnings = error`` a warning is
    an exception; raised from a run hook it would escape into the user's code
    and leave the run RUNNING. Never breaking the user's job comes first.
    """
    try:
        warnings.warn(message, category, stacklevel=stacklevel + 1)
    except Exception:
        _log.warning("%s", message)
