"""Hugging Face ``transformers`` adapter: ``GreenCallback``, a ``TrainerCallback`` over the core.

Importing this module imports ``transformers``; nothing else in ``mlflow_green`` does.
"""

from __future__ import annotations

import math
from typing import Any

from transformers import TrainerCallback

from mlflow_green.callbacks.core import BudgetedCallback


class GreenCallback(BudgetedCallback, TrainerCallback):
    """Per-epoch energy, its forecast, and a budget stop for ``Trainer.train``.

    >>> Trainer(model, args, train_dataset=data, callbacks=[GreenCallback(max_kwh=5.0)])

    Logs on the active MLflow run (the one ``report_to="mlflow"`` starts, or your
    own), else the only run autolog measures; stops through
    ``control.should_training_stop``, so the trainer saves, logs and ends as after
    its own early stop. The forecast's progress is steps done / ``max_steps``.
    Arguments: see :class:`~mlflow_green.callbacks.core.TrainingEnergy`.
    """

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.energy.begin(
            state.num_train_epochs or None,
            log=bool(state.is_world_process_zero),
            progress_unit="steps",
            done_before=state.global_step / state.max_steps if state.max_steps else None,
        )

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        epoch = max(0, math.ceil((state.epoch or 0.0) - 1e-9) - 1)
        fraction = state.global_step / state.max_steps if state.max_steps else None
        if self.energy.epoch_end(epoch, fraction):
            control.should_training_stop = True

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.energy.end()
