"""The budget rule: budget tags, what counts as a measurement, and the pass/fail decision (no I/O).

One function, :func:`evaluate`, decides for the client check (``check_budget``,
``promote``, ``mlflow-green gate``) and for the server gate (``GreenRegistryStore``),
from data each side has already read (see :mod:`mlflow_green.registry.lineage`).
"""

from __future__ import annotations

import math
import numbers
import re
import sys
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import PERMISSION_DENIED

#: Registered-model tag holding the energy budget, kWh.
BUDGET_KWH_TAG = "green.budget_kwh"
#: Registered-model tag holding the emissions budget, kg CO2eq.
BUDGET_CO2EQ_TAG = "green.budget_co2eq_kg"
#: Run metrics a version's energy and emissions are read from.
ENERGY_METRIC = "green/energy_kwh"
CO2EQ_METRIC = "green/co2eq_kg"
#: The metrics the gate reads.
GATE_METRICS = (ENERGY_METRIC, CO2EQ_METRIC)

# (tag, metric, unit, what) for each kind of budget.
KINDS = (
    (BUDGET_KWH_TAG, ENERGY_METRIC, "kWh", "energy"),
    (BUDGET_CO2EQ_TAG, CO2EQ_METRIC, "kg CO2eq", "emissions"),
)
# A budget tag is a plain ASCII decimal number: digits, an optional fraction, an optional
# exponent (the form repr() gave budgets written by mlflow-green 0.1). No sign, no spaces,
# no "_", no non-ASCII digits, no "inf"/"nan"/hex: float() would take those, people misread them.
_BUDGET_TAG = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
# SQL tracking stores keep +/-inf as +/-max float (SqlAlchemyStore.sanitize_metric_value).
_STORED_INF = sys.float_info.max


@dataclass(frozen=True)
class BudgetCheck:
    """The outcome of checking one model version against its registered model's budgets.

    ``energy_kwh`` / ``co2eq_kg`` are the values measured for the version's run
    (``None`` when unknown); ``budget_kwh`` / ``budget_co2eq_kg`` the budgets
    (``None`` when not set or not a valid number). ``reason`` says why, in words.
    ``run_id`` is the run whose energy counts (the one that produced the
    version's artifacts), ``None`` when no run could be trusted.
    """

    model_name: str
    version: str
    passed: bool
    energy_kwh: float | None
    co2eq_kg: float | None
    budget_kwh: float | None
    budget_co2eq_kg: float | None
    reason: str
    run_id: str | None = None

    def __bool__(self) -> bool:
        return self.passed


class EnergyBudgetExceeded(MlflowException):
    """Promotion refused: the version is over budget, its energy is unknown, or a budget is invalid.

    ``check`` holds the :class:`BudgetCheck`. A subclass of ``MlflowException``
    with ``PERMISSION_DENIED``, the error the gated server answers, so one
    ``except`` handles a refusal from either side.
    """

    def __init__(self, check: BudgetCheck) -> None:
        super().__init__(f"Promotion refused: {check.reason}", error_code=PERMISSION_DENIED)
        self.check = check


def validate_budget_value(value: Any, what: str) -> float:
    """``value`` as a float, or ``ValueError`` unless it is a non-negative finite number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{what} must be a number, got {value!r}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond float range
        raise ValueError(f"{what} must be a non-negative finite number, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{what} must be a non-negative finite number, got {value!r}")
    return number + 0.0  # -0.0 -> 0.0: a tag never carries a sign


def budget_tag_value(number: float) -> str:
    """``number`` written as a budget tag: a plain decimal (no exponent) that parses back exactly.

    ``repr`` is the shortest string that round-trips; ``Decimal`` spells it out
    without an exponent (``1e-05`` -> ``0.00001``, ``1e+16`` -> ``10000000000000000``).
    """
    return format(Decimal(repr(float(number) + 0.0)), "f")


def parse_budget_tag(value: Any) -> float:
    """The budget a tag value holds; ``ValueError`` (saying why) unless it is a plain decimal."""
    if not isinstance(value, str) or not _BUDGET_TAG.fullmatch(value):
        raise ValueError("not a plain decimal number")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("not a finite number")
    return number


def is_measurement(value: float) -> bool:
    """Whether a logged energy/emissions value can be a measurement: finite and not negative."""
    return math.isfinite(value) and 0 <= value < _STORED_INF


def gate_value(largest: float | None, smallest: float | None, nan_count: int) -> float:
    """The one value the gate takes from all values logged for a metric in a run.

    The metrics are cumulative, so the largest value logged is the run's total, and
    logging a lower value later cannot lower it. If any value logged is not a
    measurement (NaN, negative, infinite), that value is taken instead, so the
    version is refused naming it. ``largest`` / ``smallest`` are over the non-NaN
    values (``None`` when there are none); SQL's stored +/-max float reads as +/-inf.
    """
    if nan_count or largest is None or smallest is None:
        return math.nan
    if smallest < 0:
        return -math.inf if smallest <= -_STORED_INF else smallest
    if largest >= _STORED_INF:
        return math.inf
    return largest


def take_values(values: list[float]) -> float | None:
    """:func:`gate_value` of a metric's whole history (``None`` when nothing was logged)."""
    if not values:
        return None
    numbers_ = [float(v) for v in values if not math.isnan(float(v))]
    nan_count = len(values) - len(numbers_)
    return gate_value(
        max(numbers_) if numbers_ else None, min(numbers_) if numbers_ else None, nan_count
    )


def fmt(value: float) -> str:
    """A number for a message: enough digits to tell a version just over budget from one on it."""
    return f"{value:.6g}"


def has_budget(model_tags: dict[str, str]) -> bool:
    """Whether a registered model with these tags carries any budget tag (then it is gated)."""
    return BUDGET_KWH_TAG in model_tags or BUDGET_CO2EQ_TAG in model_tags


def _unknown_why(
    metric: str, run_id: str | None, metrics: dict[str, float] | None, unknown_why: str | None
) -> str | None:
    """Why the value of ``metric`` is unknown, or ``None`` when it is a measurement."""
    if metrics is None:
        if unknown_why:
            return unknown_why
        return "it has no source run" if run_id is None else f"its run {run_id} could not be read"
    if metrics.get(metric) is None:
        return f"its run {run_id} has no {metric} metric"
    value = float(metrics[metric])
    if not is_measurement(value):
        return f"{metric}={fmt(value)} logged to run {run_id} is not a measurement"
    return None


@dataclass(frozen=True)
class Judgement:
    """One budget a registered model sets, against one value: the rule's verdict, no words."""

    tag: str
    """``green.budget_kwh`` or ``green.budget_co2eq_kg``."""
    metric: str
    unit: str
    what: str
    budget: float | None
    """The budget; ``None`` when the tag is not a plain decimal (:attr:`invalid` says why)."""
    value: float | None
    """The value judged; ``None`` when unknown (it cannot pass a budget: fail closed)."""
    invalid: str | None = None

    @property
    def passed(self) -> bool:
        """A valid budget, a known value, and the value at most the budget."""
        return self.budget is not None and self.value is not None and self.value <= self.budget


def judge(model_tags: dict[str, str], values: dict[str, float | None]) -> list[Judgement]:
    """Each budget ``model_tags`` set (in :data:`KINDS` order) against ``values[metric]``
    (``None`` or absent: unknown). The one place the rule compares; callers word it."""
    out = []
    for tag, metric, unit, what in KINDS:
        raw = model_tags.get(tag)
        if raw is None:
            continue
        try:
            budget, invalid = parse_budget_tag(raw), None
        except ValueError as exc:
            budget, invalid = None, str(exc)
        out.append(Judgement(tag, metric, unit, what, budget, values.get(metric), invalid))
    return out


def evaluate(
    model_name: str,
    version: str | int,
    model_tags: dict[str, str],
    run_id: str | None,
    metrics: dict[str, float] | None,
    unknown_why: str | None = None,
) -> BudgetCheck:
    """Apply the budget rule to already-fetched data (shared by client and server).

    * a model with no budget tag passes, whatever its other tags say;
    * a value that is unknown (no trusted run, run deleted or unreadable, metric
      missing, or a logged value that is not a measurement: NaN, negative,
      infinite) does not pass a budget of its kind (fail closed);
    * a measured value equal to the budget passes; above it fails;
    * a budget tag that is not a plain decimal number refuses every promotion.

    Args:
        model_name: the registered model whose budgets apply.
        version: the version being checked (of ``model_name``, or copied into it).
        model_tags: the registered model's tags (budgets are read from them).
        run_id: the run whose energy counts (``None`` when none can be trusted).
        metrics: the value taken for each metric of that run (see
            :func:`gate_value`; a key is absent when nothing was logged);
            ``None`` when the run is not evidence.
        unknown_why: why ``metrics`` is ``None`` (for the message).
    """
    version = str(version)
    measured: dict[str, float | None] = {}
    for metric in GATE_METRICS:
        why = _unknown_why(metric, run_id, metrics, unknown_why)
        measured[metric] = None if why else float(metrics[metric])  # type: ignore[index]
    budgets: dict[str, float | None] = {BUDGET_KWH_TAG: None, BUDGET_CO2EQ_TAG: None}
    failures: list[str] = []
    within: list[str] = []
    for j in judge(model_tags, measured):
        budgets[j.tag] = j.budget
        if j.invalid is not None:
            failures.append(
                f"the budget tag {j.tag}={model_tags[j.tag]!r} is invalid ({j.invalid}); it "
                f"must be a plain non-negative decimal number of {j.unit}, such as 0.5"
            )
            continue
        budget = f"{fmt(j.budget or 0.0)} {j.unit}"  # a valid tag: never None here
        if j.value is None:
            why = _unknown_why(j.metric, run_id, metrics, unknown_why)
            failures.append(
                f"{j.what} unknown ({why}), so it cannot pass the {j.what} budget of "
                f"{budget} ({j.tag})"
            )
        elif not j.passed:
            failures.append(
                f"{j.what} {fmt(j.value)} {j.unit} exceeds the budget of {budget} ({j.tag})"
            )
        else:
            within.append(f"{j.what} {fmt(j.value)} {j.unit} within the budget of {budget}")
    head = f"model '{model_name}' version {version}"
    if failures:
        reason = f"{head}: " + "; ".join(failures)
    elif within:
        reason = f"{head}: " + "; ".join(within)
    else:
        reason = f"{head}: model '{model_name}' has no energy or carbon budget"
    return BudgetCheck(
        model_name=model_name,
        version=version,
        passed=not failures,
        energy_kwh=measured[ENERGY_METRIC],
        co2eq_kg=measured[CO2EQ_METRIC],
        budget_kwh=budgets[BUDGET_KWH_TAG],
        budget_co2eq_kg=budgets[BUDGET_CO2EQ_TAG],
        reason=reason,
        run_id=run_id,
    )
