"""A refused ``copy_model_version`` reaches the caller as ``PERMISSION_DENIED``, not INTERNAL_ERROR.

Why this exists: the gated server answers a refused copy with HTTP 403
``PERMISSION_DENIED`` (a copy is a ``create_model_version`` whose source is
``models:/<name>/<version>``). MLflow's client-side
``AbstractStore.copy_model_version`` (3.17) catches every ``MlflowException`` from
that call and raises a new one, ``"Failed to create model version copy ...
Error: <the server's message>"``, without an error code, i.e. INTERNAL_ERROR
(HTTP 500's code); the 403 survives only as ``__cause__``. Every refusal of a
copy is affected (MLflow's own basic-auth 403s too), so the fix is made where the
code is lost: :func:`install` wraps that method so that when the cause is
``PERMISSION_DENIED``, the error raised carries ``PERMISSION_DENIED`` too
(same message, same cause). Nothing else changes.

A client without mlflow-green installed keeps MLflow's behaviour.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

_MODULE = "mlflow.store.model_registry.abstract_store"
_MARK = "__mlflow_green_keeps_refusals__"


def install() -> bool:
    """Wrap ``AbstractStore.copy_model_version`` once (idempotent); ``False`` if MLflow lacks it.

    Safe to call at any time after ``import mlflow``: it imports only the abstract store.
    """
    import importlib

    try:
        module = sys.modules.get(_MODULE) or importlib.import_module(_MODULE)
        cls = module.AbstractStore
        original = cls.__dict__["copy_model_version"]
    except (ImportError, AttributeError, KeyError):
        return False
    if getattr(original, _MARK, False):
        return True

    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import PERMISSION_DENIED, ErrorCode

    denied = ErrorCode.Name(PERMISSION_DENIED)

    @functools.wraps(original)
    def copy_model_version(self: Any, src_mv: Any, dst_name: str) -> Any:
        try:
            return original(self, src_mv, dst_name)
        except MlflowException as exc:
            cause = exc.__cause__
            if (
                exc.error_code != denied
                and isinstance(cause, MlflowException)
                and cause.error_code == denied
            ):
                raise MlflowException(exc.message, error_code=PERMISSION_DENIED) from cause
            raise

    setattr(copy_model_version, _MARK, True)
    cls.copy_model_version = copy_model_version
    return True
