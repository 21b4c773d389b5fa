"""``mlflow_green.callbacks.transformers.GreenCallback`` on a real ``Trainer`` (tiny BERT, CPU)."""

from __future__ import annotations

import pytest
import torch
from mlflow import MlflowClient

from tests.callbacks.conftest import history

pytest.importorskip("transformers")
pytest.importorskip("accelerate")
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainingArguments,
)

from mlflow_green.callbacks.transformers import GreenCallback

EPOCHS = 3


class Sentences(torch.utils.data.Dataset):
    """16 random "sentences" of 8 token ids with binary labels."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, 64, (16, 8), generator=g)
        self.labels = torch.randint(0, 2, (16,), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self.ids[i],
            "attention_mask": torch.ones(8, dtype=torch.long),
            "labels": self.labels[i],
        }


def train(tmp_path, callback: GreenCallback | None) -> tuple[Trainer, str]:
    """Train a 1-layer BERT built from a config (no download) with MLflow reporting on."""
    config = BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    torch.manual_seed(0)
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        num_train_epochs=EPOCHS,
        per_device_train_batch_size=8,
        report_to=["mlflow"],
        save_strategy="epoch",
        logging_strategy="epoch",
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=BertForSequenceClassification(config),
        args=args,
        train_dataset=Sentences(),
        callbacks=[callback] if callback is not None else None,
    )
    trainer.train()
    runs = MlflowClient().search_runs(["0"], order_by=["start_time DESC"], max_results=1)
    return trainer, runs[0].info.run_id


def test_a_tiny_budget_stops_the_trainer_after_its_first_epoch(sqlite_uri, tmp_path) -> None:
    with pytest.warns(UserWarning, match="stopping the training at epoch 0"):
        trainer, run_id = train(tmp_path, GreenCallback(max_kwh=1e-15))
    assert trainer.state.epoch == 1.0 < EPOCHS
    assert trainer.state.global_step == 2  # 16 examples / 8 per step: one epoch
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["green.stopped_by_budget"].startswith("epoch 0: energy so far")
    assert [step for step, _ in history(run_id, "green/epoch_kwh")] == [0]
    assert (tmp_path / "out" / "checkpoint-2").is_dir()  # the trainer saved as usual


def test_without_a_budget_the_trainer_runs_every_epoch(sqlite_uri, tmp_path) -> None:
    callback = GreenCallback()
    trainer, run_id = train(tmp_path, callback)
    assert trainer.state.epoch == EPOCHS
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED"
    assert "green.stopped_by_budget" not in run.data.tags
    assert [step for step, _ in history(run_id, "green/epoch_kwh")] == list(range(EPOCHS))
    fractions = [row.fraction_done for row in callback.energy.history]
    assert fractions == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert [step for step, _ in history(run_id, "green/projected_co2eq_kg")] == list(range(EPOCHS))


def test_the_same_training_without_the_callback_logs_no_green_metric(sqlite_uri, tmp_path) -> None:
    trainer, run_id = train(tmp_path, None)
    assert trainer.state.epoch == EPOCHS
    assert not [k for k in MlflowClient().get_run(run_id).data.metrics if k.startswith("green/")]


def test_the_registered_models_budget_stops_the_trainer(sqlite_uri, tmp_path) -> None:
    import mlflow_green

    MlflowClient().create_registered_model("bert-tiny")
    mlflow_green.set_budget("bert-tiny", max_kwh=1e-15)
    with pytest.warns(UserWarning, match="stopping the training at epoch 0"):
        trainer, run_id = train(tmp_path, GreenCallback(registered_model_name="bert-tiny"))
    assert trainer.state.epoch == 1.0
    reason = MlflowClient().get_run(run_id).data.tags["green.stopped_by_budget"]
    assert "exceeds registered model 'bert-tiny' (green.budget_kwh) = 1e-15 kWh" in reason
