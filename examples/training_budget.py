"""A training held to its registered model's energy budget, stopped before it spends it.

    python examples/training_budget.py          # on MLflow's default sqlite:///mlflow.db

1. A baseline Lightning training of 6 epochs, with mlflow-green's callback and autolog on:
   each epoch's energy and the forecast of the total are on its run.
2. The registered model gets a budget of half what the baseline spent
   (``mlflow_green.set_budget``: the same tag the registry's gate applies at promotion).
3. The same training with ``GreenCallback(registered_model_name=...)``: it reads the budget,
   sees after its first epoch that it would spend twice the budget, and stops. The run
   ends FINISHED with the tag ``green.stopped_by_budget``.

Runs on the CPU in seconds; energy is an estimate on a machine without RAPL or a GPU.
"""

from __future__ import annotations

import logging
import warnings

import mlflow
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import MLFlowLogger
from mlflow import MlflowClient

import mlflow_green
from mlflow_green.callbacks.lightning import GreenCallback

MODEL = "budgeted-regressor"
EPOCHS = 6


class Regressor(LightningModule):
    """A small MLP on random data: enough work per epoch to measure."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(32, 256), torch.nn.ReLU(), torch.nn.Linear(256, 1)
        )

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(4096, 32, generator=g), torch.randn(4096, 1, generator=g)
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64)


def train(callback: GreenCallback, run_name: str) -> tuple[str, int]:
    """One training; returns its run id and the number of epochs it ran."""
    logger = MLFlowLogger(
        experiment_name="mlflow-green-training-budget",
        run_name=run_name,
        tracking_uri=mlflow.get_tracking_uri(),
    )
    trainer = Trainer(
        max_epochs=EPOCHS,
        accelerator="cpu",
        logger=logger,
        callbacks=[callback],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(Regressor())
    return logger.run_id, trainer.current_epoch


def main() -> None:
    logging.getLogger("lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    mlflow_green.autolog(log_artifacts=False)  # the forecast is then the run's energy
    client = MlflowClient()

    baseline = GreenCallback()
    run_id, epochs = train(baseline, "baseline")
    spent_kwh = client.get_run(run_id).data.metrics["green/energy_kwh"]
    print(f"baseline: {epochs} epochs, {spent_kwh:.3g} kWh (run {run_id})")
    for row in baseline.energy.history:
        print(f"  epoch {row.epoch}: {row.energy_kwh:.3g} kWh, forecast {row.projected_kwh:.3g}")

    if client.search_registered_models(f"name = '{MODEL}'") == []:
        client.create_registered_model(MODEL)
    mlflow_green.set_budget(MODEL, max_kwh=spent_kwh / 2)
    print(f"budget of {MODEL!r}: {spent_kwh / 2:.3g} kWh (half the baseline)")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the stop's warning: its text is the run's tag
        run_id, epochs = train(GreenCallback(registered_model_name=MODEL), "budgeted")
    run = client.get_run(run_id)
    print(f"budgeted: {epochs} of {EPOCHS} epochs, run {run.info.status}")
    print(f"  green.stopped_by_budget = {run.data.tags.get('green.stopped_by_budget')}")
    print(f"  spent {run.data.metrics['green/energy_kwh']:.3g} kWh")


if __name__ == "__main__":
    main()
