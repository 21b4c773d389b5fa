"""Training callbacks: per-epoch energy, a forecast of the total, and a budget that stops training.

One framework-agnostic core, :class:`~mlflow_green.callbacks.core.TrainingEnergy`
(a plain PyTorch loop calls it directly), and a thin adapter per framework, each
imported only when asked for so that no framework is imported here:

* ``mlflow_green.callbacks.lightning.GreenCallback`` (PyTorch Lightning),
* ``mlflow_green.callbacks.transformers.GreenCallback`` (Hugging Face ``Trainer``),
* ``mlflow_green.callbacks.keras.GreenCallback`` (Keras 3).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow_green.callbacks.core import EpochEnergy, TrainingEnergy

__all__ = ["EpochEnergy", "TrainingEnergy"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from mlflow_green.callbacks import core

        return getattr(core, name)
    raise AttributeError(f"module 'mlflow_green.callbacks' has no attribute {name!r}")
