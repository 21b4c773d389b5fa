"""Keras 3 adapter: ``GreenCallback``, a ``keras.callbacks.Callback`` over the core.

Importing this module imports ``keras`` (any backend; tested on torch); nothing else
in ``mlflow_green`` does.
"""

from __future__ import annotations

from typing import Any

import keras

from mlflow_green.callbacks.core import BudgetedCallback


class GreenCallback(BudgetedCallback, keras.callbacks.Callback):
    """Per-epoch energy, its forecast, and a budget stop for ``model.fit``.

    >>> with mlflow.start_run():
    ...     model.fit(x, y, epochs=20, callbacks=[GreenCallback(max_kwh=5.0)])

    Logs on the active MLflow run (``mlflow.keras.autolog()``'s, or your own), else
    the only run autolog measures; stops through ``model.stop_training``, as Keras's
    own ``EarlyStopping`` does. Arguments: see
    :class:`~mlflow_green.callbacks.core.TrainingEnergy`.
    """

    def on_train_begin(self, logs: Any = None) -> None:
        self.energy.begin((self.params or {}).get("epochs"))

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        if self.energy.epoch_end(epoch):
            self.model.stop_training = True

    def on_train_end(self, logs: Any = None) -> None:
        self.energy.end()
