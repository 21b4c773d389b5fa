"""``mlflow_green.callbacks.lightning.GreenCallback`` on real Lightning trainings (CPU, SQLite)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

import mlflow_green
from tests.callbacks.conftest import history

pytest.importorskip("lightning")
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import MLFlowLogger

from mlflow_green.callbacks.lightning import GreenCallback

EPOCHS = 4


class Tiny(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(8, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        data = torch.utils.data.TensorDataset(
            torch.randn(64, 8, generator=g), torch.randn(64, 1, generator=g)
        )
        return torch.utils.data.DataLoader(data, batch_size=16)


def fit(
    uri: str, root: Path, callback: GreenCallback | None, **trainer_kwargs
) -> tuple[Trainer, str]:
    logger = MLFlowLogger(experiment_name="lightning", tracking_uri=uri)
    trainer = Trainer(
        max_epochs=EPOCHS,
        accelerator="cpu",
        devices=1,
        logger=logger,
        callbacks=[callback] if callback is not None else [],
        default_root_dir=str(root),
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer_kwargs,
    )
    trainer.fit(Tiny())
    return trainer, logger.run_id


def test_a_tiny_budget_stops_training_after_its_first_epoch(sqlite_uri, tmp_path) -> None:
    with pytest.warns(UserWarning, match="stopping the training at epoch 0: energy so far"):
        trainer, run_id = fit(sqlite_uri, tmp_path, GreenCallback(max_kwh=1e-15))
    assert trainer.current_epoch == 1 < EPOCHS  # one epoch ran, then the budget stopped it
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["green.stopped_by_budget"].startswith("epoch 0: energy so far")
    assert "exceeds max_kwh = 1e-15 kWh" in run.data.tags["green.stopped_by_budget"]
    assert [step for step, _ in history(run_id, "green/epoch_kwh")] == [0]
    assert history(run_id, "green/epoch_kwh")[0][1] > 0
    assert Path(trainer.checkpoint_callback.best_model_path).is_file()  # checkpointing ran


def test_without_a_budget_training_runs_to_the_end_with_each_epochs_energy(
    sqlite_uri, tmp_path
) -> None:
    callback = GreenCallback()
    trainer, run_id = fit(sqlite_uri, tmp_path, callback)
    assert trainer.current_epoch == EPOCHS
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED"
    assert "green.stopped_by_budget" not in run.data.tags
    epochs = history(run_id, "green/epoch_kwh")
    assert [step for step, _ in epochs] == list(range(EPOCHS))
    assert all(value > 0 for _, value in epochs)
    projected = history(run_id, "green/projected_kwh")
    assert [step for step, _ in projected] == list(range(EPOCHS))
    # At the last epoch the forecast is the energy spent.
    assert projected[-1][1] == pytest.approx(callback.energy.history[-1].total_kwh, rel=1e-12)


def test_the_same_training_without_the_callback_is_untouched(sqlite_uri, tmp_path) -> None:
    trainer, run_id = fit(sqlite_uri, tmp_path, None)
    assert trainer.current_epoch == EPOCHS
    assert not [k for k in MlflowClient().get_run(run_id).data.metrics if k.startswith("green/")]


def test_max_steps_is_the_length_when_it_ends_training_first(sqlite_uri, tmp_path) -> None:
    # 4 batches per epoch; max_steps=6 ends in the second epoch: after epoch 0, 4/6 is done.
    callback = GreenCallback()
    fit(sqlite_uri, tmp_path, callback, max_steps=6)
    assert callback.energy.history[0].fraction_done == pytest.approx(4 / 6)


def test_phase_takes_the_loggers_run_and_autolog_measures_it(sqlite_uri, tmp_path) -> None:
    mlflow_green.autolog(log_artifacts=False)
    logger = MLFlowLogger(experiment_name="lightning", tracking_uri=sqlite_uri)
    trainer = Trainer(
        max_epochs=2,
        logger=logger,
        callbacks=[GreenCallback()],
        default_root_dir=str(tmp_path),
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with mlflow_green.phase("train", run_id=logger.run_id):
        trainer.fit(Tiny())
    metrics = MlflowClient().get_run(logger.run_id).data.metrics
    # (The phase ends after fit() returns, so it may hold a little more than the run,
    # which the logger ends inside fit().)
    assert metrics["green/phase/train_kwh"] > 0 and metrics["green/energy_kwh"] > 0
    assert metrics["green/epoch_kwh"] > 0
