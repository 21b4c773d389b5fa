"""mlflow-green: energy and carbon of machine learning as first-class numbers in MLflow.

Public API (imported lazily so that ``import mlflow_green`` costs almost nothing):
``autolog``, ``track``, ``phase``, ``flush``, ``EnergyReport``; registry budgets:
``set_budget``, ``check_budget``, ``promote``, ``BudgetCheck``, ``EnergyBudgetExceeded``;
comparison: ``rank_models``, ``measure_inference``; planning: ``estimate`` (a job before it
runs: energy, CO2eq, cost), ``JobEstimate``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow_green._version import __version__
    from mlflow_green.measure.planning import JobEstimate, estimate
    from mlflow_green.measure.report import EnergyReport
    from mlflow_green.measure.tracker import Tracker, track
    from mlflow_green.registry.budgets import (
        BudgetCheck,
        EnergyBudgetExceeded,
        check_budget,
        promote,
        remove_budget,
        set_budget,
    )
    from mlflow_green.registry.inference import InferenceEnergy, measure_inference
    from mlflow_green.registry.rank import RankingError, rank_models
    from mlflow_green.runs.autologging import autolog
    from mlflow_green.runs.flushing import flush
    from mlflow_green.runs.phases import phase

__all__ = [
    "BudgetCheck",
    "EnergyBudgetExceeded",
    "EnergyReport",
    "InferenceEnergy",
    "JobEstimate",
    "RankingError",
    "Tracker",
    "__version__",
    "autolog",
    "check_budget",
    "estimate",
    "flush",
    "measure_inference",
    "phase",
    "promote",
    "rank_models",
    "remove_budget",
    "set_budget",
    "track",
]

_LAZY = {
    "__version__": "mlflow_green._version",
    "autolog": "mlflow_green.runs.autologging",
    "flush": "mlflow_green.runs.flushing",
    "phase": "mlflow_green.runs.phases",
    "track": "mlflow_green.measure.tracker",
    "rank_models": "mlflow_green.registry.rank",
    "measure_inference": "mlflow_green.registry.inference",
    "RankingError": "mlflow_green.registry.rank",
    "InferenceEnergy": "mlflow_green.registry.inference",
    "set_budget": "mlflow_green.registry.budgets",
    "remove_budget": "mlflow_green.registry.budgets",
    "check_budget": "mlflow_green.registry.budgets",
    "promote": "mlflow_green.registry.budgets",
    "BudgetCheck": "mlflow_green.registry.budgets",
    "EnergyBudgetExceeded": "mlflow_green.registry.budgets",
    "Tracker": "mlflow_green.measure.tracker",
    "EnergyReport": "mlflow_green.measure.report",
    "estimate": "mlflow_green.measure.planning",
    "JobEstimate": "mlflow_green.measure.planning",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mlflow_green' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
