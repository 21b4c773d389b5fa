"""Quick start (`make demo`): train models of different sizes; every run records its energy.

Runs on MLflow's embedded default store, ``sqlite:///mlflow.db`` in the current
folder (or ``MLFLOW_TRACKING_URI``), logs each model's hyperparameters and
accuracy, registers it, and measures the fit as the phase ``train``. It ends with
the ranking of the registered versions by accuracy per kWh of training (the same
table as ``mlflow-green rank --metric accuracy --model digits-...``), the Pareto
front plot (``pareto.png`` in the current folder) and where to look in the MLflow UI.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
import warnings
from pathlib import Path

import mlflow
from mlflow.models import infer_signature
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
EXPERIMENT = "mlflow-green-quickstart"
PLOT = "pareto.png"

# name -> (estimator, hyperparameters); registered as digits-<name>.
MODELS = {
    "logreg": (LogisticRegression, {"max_iter": 500}),
    "forest-30": (RandomForestClassifier, {"n_estimators": 30, "random_state": 0}),
    "forest-300": (RandomForestClassifier, {"n_estimators": 300, "random_state": 0}),
    "mlp-512": (
        MLPClassifier,
        {"hidden_layer_sizes": (512, 256), "max_iter": 150, "random_state": 0},
    ),
}
MODEL_NAMES = [f"digits-{name}" for name in MODELS]
# Given rather than inferred (MLflow would load each model in a subprocess: seconds):
# scikit-learn and skops at their installed versions; MLflow adds itself.
PIP_REQUIREMENTS = mlflow.sklearn.get_default_pip_requirements(include_skops=True)
# Our own freshly trained models: safe to load (MLflow's skops format asks).
TRUSTED_TYPES = [
    "sklearn.tree._tree.Tree",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
]


def train_and_register() -> None:
    """One run per model: hyperparameters, the fit as phase ``train``, accuracy, the model."""
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=0)
    for name, (estimator, params) in MODELS.items():
        with mlflow.start_run(run_name=name):
            mlflow.log_params({"estimator": estimator.__name__, **params})
            model = estimator(**params)
            with mlflow_green.phase("train"):
                model.fit(x_train, y_train)
            with mlflow_green.phase("evaluate"):
                accuracy = model.score(x_test, y_test)
            mlflow.log_metric("accuracy", accuracy)
            # MLflow prints two lines per registration to stderr; one line below says it.
            with contextlib.redirect_stderr(io.StringIO()):
                info = mlflow.sklearn.log_model(
                    model,
                    name="model",
                    registered_model_name=f"digits-{name}",
                    signature=infer_signature(x_test[:2], model.predict(x_test[:2])),
                    pip_requirements=PIP_REQUIREMENTS,
                    skops_trusted_types=TRUSTED_TYPES,
                )
        print(
            f"  trained {name:11s} accuracy {accuracy:.3f}, registered as "
            f"digits-{name} version {info.registered_model_version}",
            flush=True,
        )


def show_ranking() -> None:
    """The ranking as ``mlflow-green rank`` prints it, the Pareto plot, where to look."""
    from mlflow_green.cli.rank import plot_pareto, to_table

    frame = mlflow_green.rank_models("accuracy", model_names=MODEL_NAMES)
    print(
        "\nRegistered versions by accuracy per kWh of training (energy_source phase:train: "
        "the fit alone; * = Pareto front):\n"
    )
    print(to_table(frame))
    plot_pareto(frame, PLOT)
    print(f"\nPareto front: {Path(PLOT).resolve()}")
    print(
        "Same table: mlflow-green rank --metric accuracy "
        f"{' '.join(f'--model {n}' for n in MODEL_NAMES)}\n"
        "Budgets count the whole run (its green/energy_kwh: logging and registering too)."
    )
    print(
        f"\nIn the MLflow UI: mlflow ui --backend-store-uri {TRACKING_URI}, experiment "
        f"'{EXPERIMENT}':\n"
        "  Chart view shows the green sections; select runs -> Compare -> Scatter plot "
        "accuracy vs green/co2eq_kg;\n"
        "  each run's Artifacts -> green/report.html"
    )


def main() -> None:
    mlflow.set_tracking_uri(TRACKING_URI)
    mlflow.set_experiment(EXPERIMENT)
    mlflow_green.autolog(country=COUNTRY)
    train_and_register()
    show_ranking()


if __name__ == "__main__":
    main()
    import psutil  # mlflow-green's own dependency

    # Since the process started: imports included (the charts drawn at exit are not).
    print(f"(demo took {time.time() - psutil.Process().create_time():.0f} s)")
