"""mlflow-green: energy and carbon of machine learning as first-class numbers in MLflow.

Public API (imported lazily so that ``import mlflow_green`` costs almost nothing):
``autolog``, ``track``, ``phase``, ``flush``, ``EnergyReport``; registry budgets:
``set_budget``, ``check_budget``, ``promote``, ``BudgetCheck``, ``EnergyBudgetExceeded``;
comparison: ``rank_models``, ``measure_inference``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlflow_green._version import __version__

if TYPE_CHECKING:
    from mlflow_green.compare import InferenceEnergy, RankingError, measure_inference, rank_models
    from mlflow_green.hooks import autolog, flush
    from mlflow_green.measure import Tracker, track
    from mlflow_green.phases import phase
    from mlflow_green.registry import (
        BudgetCheck,
        EnergyBudgetExceeded,
        check_budget,
        promote,
        remove_budget,
        set_budget,
    )
    from mlflow_green.report import EnergyReport

__all__ = [
    "BudgetCheck",
    "EnergyBudgetExceeded",
    "EnergyReport",
    "InferenceEnergy",
    "RankingError",
    "Tracker",
    "__version__",
    "autolog",
    "check_budget",
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
    "autolog": "mlflow_green.hooks",
    "flush": "mlflow_green.hooks",
    "phase": "mlflow_green.phases",
    "track": "mlflow_green.measure",
    "rank_models": "mlflow_green.compare",
    "measure_inference": "mlflow_green.compare",
    "RankingError": "mlflow_green.compare",
    "InferenceEnergy": "mlflow_green.compare",
    "set_budget": "mlflow_green.registry",
    "remove_budget": "mlflow_green.registry",
    "check_budget": "mlflow_green.registry",
    "promote": "mlflow_green.registry",
    "BudgetCheck": "mlflow_green.registry",
    "EnergyBudgetExceeded": "mlflow_green.registry",
    "Tracker": "mlflow_green.measure",
    "EnergyReport": "mlflow_green.report",
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
