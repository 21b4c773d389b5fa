"""The examples run as users run them: a subprocess, its own working folder and MLflow store.

``examples/quickstart.py`` (``make demo``): four models trained, their hyperparameters
logged, registered, and ranked by the energy of their fit; the table it prints is
``mlflow-green rank``'s, and it writes the Pareto plot and says where to look in the UI.

``examples/training_budget.py``: a Lightning training stopped by its registered model's
budget before its last epoch, after a baseline that ran to the end.

``examples/green_inference.py --small``: four variants of one model (fp32, bf16, int8,
pruned) registered, measured with ``measure_inference`` and ranked by
``mlflow-green rank --energy inference``, whose table marks the Pareto front.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner
from mlflow import MlflowClient

from mlflow_green.cli import main
from mlflow_green.registry.rank import rank_models

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart.py"
QUICKSTART_MODELS = ["digits-logreg", "digits-forest-30", "digits-forest-300", "digits-mlp-512"]
GREEN_INFERENCE = ROOT / "examples" / "green_inference.py"
MODEL = "green-inference-digits"
VARIANTS = {"fp32", "bf16", "int8", "pruned"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run_example(script: Path, cwd: Path, uri: str, *args: str) -> str:
    """Run ``script`` with ``MLFLOW_TRACKING_URI=uri`` in ``cwd``; its stdout (asserts rc 0)."""
    # Nothing of the outer environment's MLflow or mlflow-green settings leaks in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(PYTHONPATH=str(ROOT), MLFLOW_TRACKING_URI=uri)
    proc = subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,  # seconds on a quiet machine; generous for a busy one
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc.stdout


def _printed_ranking(stdout: str) -> list[dict[str, str]]:
    """The ranked rows of the ``mlflow-green rank`` table in ``stdout``: column -> value.

    Ranked rows have no reason, so their last field is the Pareto mark when there is one.
    """
    lines = stdout.splitlines()
    (start,) = [i for i, line in enumerate(lines) if line.split()[:2] == ["rank", "model"]]
    header = lines[start].split()
    rows = []
    for line in lines[start + 1 :]:
        fields = line.split()
        if not fields or not fields[0].isdigit():
            break
        row = dict(zip(header[:4], fields[:4], strict=True))  # rank model version aliases
        row["pareto"] = "*" if fields[-1] == "*" else ""
        rows.append(row)
    return rows


def test_green_inference_ranks_four_variants_by_inference_energy(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"

    stdout = _run_example(GREEN_INFERENCE, work, uri, "--small")

    # The printed table: four versions ranked, the front marked, one row per variant.
    ranked = _printed_ranking(stdout)
    assert [r["rank"] for r in ranked] == ["1", "2", "3", "4"], stdout
    assert {r["aliases"] for r in ranked} == VARIANTS
    printed_front = {r["version"] for r in ranked if r["pareto"] == "*"}
    assert printed_front, stdout
    # ... and it is the registry's ranking: the same front from the stored figures.
    frame = rank_models("accuracy", [MODEL], energy="inference", tracking_uri=uri)
    assert len(frame) == 4 and frame["rank"].notna().all()
    assert {str(v) for v in frame.loc[frame["pareto"], "version"]} == printed_front

    # The plot, named in the output, written where it says (the working folder by default).
    (plot_line,) = [line for line in stdout.splitlines() if line.startswith("Plot: ")]
    plot = Path(plot_line.removeprefix("Plot: "))
    assert plot == work / "green_inference_pareto.png"
    assert plot.read_bytes()[:8] == PNG_MAGIC
    assert not (work / "mlflow.db").exists()  # MLFLOW_TRACKING_URI was honoured

    # Every version: its inference energy, its run's quality and energy; the variants differ.
    client = MlflowClient(uri, registry_uri=uri)
    versions = client.search_model_versions(f"name = '{MODEL}'")
    assert len(versions) == 4
    aliases = client.get_registered_model(MODEL).aliases
    assert set(aliases) == VARIANTS
    size_mb, zeros = {}, {}
    for variant, number in aliases.items():
        version = client.get_model_version(MODEL, number)
        assert float(version.tags["green.inference_wh_per_1k"]) > 0, variant
        metrics = client.get_run(version.run_id).data.metrics
        assert metrics["green/inference_wh_per_1k"] > 0, variant
        assert metrics["green/energy_kwh"] > 0, variant  # training (or deriving) energy
        assert 0.5 < metrics["accuracy"] <= 1.0, variant  # ten classes: chance is 0.1
        size_mb[variant] = metrics["model_size_mb"]
        zeros[variant] = metrics.get("zero_weight_share")
    assert size_mb["int8"] < size_mb["bf16"] < size_mb["fp32"]
    assert zeros["pruned"] >= 0.5 > 0.01 > zeros["fp32"]  # --small prunes half the weights
    assert zeros["int8"] is None  # packed int8 weights: no float Linear left


def _table(stdout: str) -> list[str]:
    """The lines of the ranking table in ``stdout``: its header up to the first blank line."""
    lines = stdout.splitlines()
    (start,) = [i for i, line in enumerate(lines) if line.split()[:2] == ["rank", "model"]]
    end = lines.index("", start) if "" in lines[start:] else len(lines)
    return [line.rstrip() for line in lines[start:end]]


def test_quickstart_ranks_by_the_fit_as_the_cli_does(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"

    stdout = _run_example(QUICKSTART, work, uri)

    # The printed ranking is exactly what `mlflow-green rank` prints for the demo's models.
    printed = _table(stdout)
    args = ["rank", "--metric", "accuracy", "--tracking-uri", uri]
    args += [a for name in QUICKSTART_MODELS for a in ("--model", name)]
    cli = CliRunner().invoke(main, args)
    assert cli.exit_code == 0, cli.output
    assert printed == _table(cli.stdout), stdout
    assert len(printed) == 1 + len(QUICKSTART_MODELS)
    assert [line.split()[0] for line in printed[1:]] == ["1", "2", "3", "4"]

    # Ranked by each run's train phase (the fit), not the whole run with its logging.
    frame = rank_models("accuracy", model_names=QUICKSTART_MODELS, tracking_uri=uri)
    assert sorted(frame["model"]) == sorted(QUICKSTART_MODELS) and frame["rank"].notna().all()
    assert (frame["energy_source"] == "phase:train").all()
    assert [line.split()[1] for line in printed[1:]] == frame["model"].tolist()
    client = MlflowClient(uri)
    for _, row in frame.iterrows():
        run = client.get_run(row["run_id"])
        assert row["energy_kwh"] == run.data.metrics["green/phase/train_kwh"] > 0
        assert run.data.metrics["green/energy_kwh"] > row["energy_kwh"]
        assert row["accuracy"] == run.data.metrics["accuracy"]
        # The hyperparameters are the run's params.
        assert run.data.params["estimator"] in {
            "LogisticRegression",
            "RandomForestClassifier",
            "MLPClassifier",
        }
        if row["model"].startswith("digits-forest"):
            assert run.data.params["n_estimators"] == row["model"].rsplit("-", 1)[1]

    # The Pareto plot, in the working folder, named in the output; where to look in the UI.
    plot = work / "pareto.png"
    assert f"Pareto front: {plot}" in stdout
    assert plot.read_bytes()[:8] == PNG_MAGIC
    assert f"mlflow ui --backend-store-uri {uri}" in stdout
    assert "green/report.html" in stdout and "'mlflow-green-quickstart'" in stdout
    assert not (work / "mlflow.db").exists()  # MLFLOW_TRACKING_URI was honoured


def test_training_budget_stops_the_second_training_before_its_last_epoch(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    stdout = _run_example(ROOT / "examples" / "training_budget.py", tmp_path, uri)
    assert "baseline: 6 epochs" in stdout
    client = MlflowClient(uri)
    runs = {
        r.info.run_name: r
        for r in client.search_runs(
            [client.get_experiment_by_name("mlflow-green-training-budget").experiment_id]
        )
    }
    budgeted, baseline = runs["budgeted"], runs["baseline"]
    assert budgeted.info.status == baseline.info.status == "FINISHED"
    assert "green.stopped_by_budget" not in baseline.data.tags
    reason = budgeted.data.tags["green.stopped_by_budget"]
    assert "exceeds registered model 'budgeted-regressor' (green.budget_kwh)" in reason
    epochs_run = len(client.get_metric_history(budgeted.info.run_id, "green/epoch_kwh"))
    assert 1 <= epochs_run < 6
    assert len(client.get_metric_history(baseline.info.run_id, "green/epoch_kwh")) == 6
    assert f"green.stopped_by_budget = {reason}" in stdout
