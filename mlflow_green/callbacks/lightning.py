"""PyTorch Lightning adapter: ``GreenCallback``, a ``Callback`` over :class:`TrainingEnergy`.

Importing this module imports Lightning (``lightning.pytorch``, else the older
``pytorch_lightning`` package); nothing else in ``mlflow_green`` does.
"""

from __future__ import annotations

import contextlib
from typing import Any

from mlflow_green.callbacks.core import BudgetedCallback, positive_int

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # the standalone package of Lightning 1.x / 2.x
    from pytorch_lightning.callbacks import Callback


class GreenCallback(BudgetedCallback, Callback):
    """Per-epoch energy, its forecast, and a budget stop for ``Trainer.fit``.

    >>> trainer = Trainer(max_epochs=20, logger=MLFlowLogger(...),
    ...                   callbacks=[GreenCallback(max_kwh=5.0)])

    Logs on the ``MLFlowLogger``'s run (else the active MLflow run, else the only run
    autolog measures) and stops through ``trainer.should_stop``, so checkpoints, the
    logger and the run end as after an early stop. Arguments: see
    :class:`~mlflow_green.callbacks.core.TrainingEnergy`.
    """

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        run_id, client = _mlflow_logger_run(trainer)
        self.energy.begin(
            trainer.max_epochs,  # begin() takes a length only when it is > 0
            run_id=run_id,
            client=client,
            log=bool(trainer.is_global_zero),
            progress_unit="epochs or steps, whichever ends training first",
            done_before=_fraction(trainer, epochs_done=trainer.current_epoch),
        )

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        stop = self.energy.epoch_end(trainer.current_epoch, _fraction(trainer))
        # Every rank stops when one does (a rank left training alone would hang).
        with contextlib.suppress(Exception):
            stop = bool(trainer.strategy.reduce_boolean_decision(stop, all=False))
        if stop:
            trainer.should_stop = True

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self.energy.end()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self.energy.end()


def _mlflow_logger_run(trainer: Any) -> tuple[str | None, Any]:
    """The run id and ``MlflowClient`` of the trainer's ``MLFlowLogger``, if it has one."""
    for logger in getattr(trainer, "loggers", None) or []:
        if type(logger).__name__ == "MLFlowLogger":
            try:
                return logger.run_id, logger.experiment
            except Exception:  # the logger itself failed: its run is not ours to find
                return None, None
    return None, None


def _fraction(trainer: Any, epochs_done: int | None = None) -> float | None:
    """Share of training done: epochs or steps, whichever limit ends training first
    (at an epoch's end, that epoch counts as done)."""
    shares = []
    if epochs_done is None:
        epochs_done = trainer.current_epoch + 1
    max_epochs = positive_int(trainer.max_epochs)
    if max_epochs:
        shares.append(epochs_done / max_epochs)
    max_steps = positive_int(trainer.max_steps)
    if max_steps:
        shares.append(trainer.global_step / max_steps)
    return min(1.0, max(shares)) if shares else None
