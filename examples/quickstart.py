"""Quick start (`make demo`): train models of different sizes; every run records its energy.

Runs on MLflow's embedded default store, ``sqlite:///mlflow.db`` in the current
folder (or ``MLFLOW_TRACKING_URI``), registers each model, and prints accuracy,
energy and emissions per run. Then compare the runs in the MLflow UI.
"""

from __future__ import annotations

import logging
import os
import time
import warnings

import mlflow
from sklearn.datasets import load_digits
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

import mlflow_green

warnings.filterwarnings("ignore")
logging.getLogger("mlflow").setLevel(logging.ERROR)

TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
COUNTRY = os.environ.get("MLFLOW_GREEN_COUNTRY", "FRA")

MODELS = {
    "logreg": lambda: LogisticRegression(max_iter=500),
    "forest-30": lambda: RandomForestClassifier(n_estimators=30, random_state=0),
    "forest-300": lambda: RandomForestClassifier(n_estimators=300, random_state=0),
    "mlp-512": lambda: MLPClassifier(hidden_layer_sizes=(512, 256), max_iter=150, random_state=0),
}


def main() -> None:
    mlflow.set_tracking_uri(TRACKING_URI)
    mlflow.set_experiment("mlflow-green-quickstart")
    mlflow_green.autolog(country=COUNTRY)

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=0)
    run_ids = {}
    for name, make in MODELS.items():
        with mlflow.start_run(run_name=name) as run:
            model = make()
            with mlflow_green.phase("train"):
                model.fit(x_train, y_train)
            with mlflow_green.phase("evaluate"):
                accuracy = model.score(x_test, y_test)
            mlflow.log_metric("accuracy", accuracy)
            mlflow.sklearn.log_model(
                model,
                name="model",
                registered_model_name=f"digits-{name}",
                input_example=x_test[:2],
                # Our own freshly trained models: safe to load (MLflow's skops format asks).
                skops_trusted_types=[
                    "sklearn.tree._tree.Tree",
                    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
                ],
            )
            run_ids[name] = run.info.run_id
        print(f"  trained {name:11s} accuracy {accuracy:.3f}", flush=True)

    client = mlflow.MlflowClient()
    print(
        f"\n{'run':12s} {'accuracy':>8s} {'train (Wh)':>10s} {'acc/train Wh':>12s} "
        f"{'run (Wh)':>9s} {'run CO2eq (g)':>13s}  cpu meter"
    )
    for name, run_id in run_ids.items():
        run = client.get_run(run_id)
        m, t = run.data.metrics, run.data.tags
        train_wh = m["green/phase/train_kwh"] * 1000
        print(
            f"{name:12s} {m['accuracy']:8.3f} {train_wh:10.4f} {m['accuracy'] / train_wh:12.1f} "
            f"{m['green/energy_kwh'] * 1000:9.4f} {m['green/co2eq_kg'] * 1000:13.5f}  "
            f"{t['green.cpu_meter']}"
        )
    print(
        "\ntrain = the fit alone (mlflow_green.phase); run = the whole run, including logging "
        "and registering the model."
    )
    intensity = run.data.tags["green.carbon_intensity_g_per_kwh"]
    print(
        f"\nGrid: {COUNTRY} at {intensity} gCO2eq/kWh. Every run holds green/* metrics, green.* "
        "tags and green/report.json, timeline.csv, power.png."
        f"\nCompare them side by side:\n  mlflow ui --backend-store-uri {TRACKING_URI}\n"
        "then open http://127.0.0.1:5000, experiment 'mlflow-green-quickstart', select the runs "
        "and press Compare."
    )


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"(demo took {time.perf_counter() - start:.0f} s)")
