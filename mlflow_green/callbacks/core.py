"""The training callbacks' one core: per-epoch energy, a forecast of the total, and the budget stop.

Framework adapters (``callbacks.lightning``, ``callbacks.transformers``,
``callbacks.keras``) only translate their framework's hooks into
:meth:`TrainingEnergy.begin`, :meth:`~TrainingEnergy.epoch_end` and
:meth:`~TrainingEnergy.end`; a plain PyTorch loop calls them itself.

The forecast is linear in training progress (as carbontracker's): the energy
the run had at the training's start plus the training's energy so far divided
by the fraction of training done. It is refreshed each epoch, and the training
is asked to stop when the energy so far, or the forecast, exceeds a budget.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from mlflow_green._tracking import LEAVING_PROBE_TIMEOUT_S, probe
from mlflow_green._warnings import warn
from mlflow_green.callbacks._budget import (
    KINDS,
    Limit,
    check_model_name,
    given_limits,
    read_registry_limits,
    tightest,
)
from mlflow_green.callbacks._reading import Meter, Reading
from mlflow_green.runs.phases import target_run_id
from mlflow_green.runs.tracked import current

#: The tag a budget stop leaves on the run, and the one naming the forecast's method.
STOPPED_TAG = "green.stopped_by_budget"
PROJECTION_TAG = "green.projection_method"


@dataclass(frozen=True)
class EpochEnergy:
    """One epoch's figures, as logged (kWh include the PUE)."""

    epoch: int
    energy_kwh: float
    """Energy of this epoch alone."""
    total_kwh: float
    """Energy so far: the run's when autolog measures it, else the training's."""
    fraction_done: float | None
    """Share of the training done after this epoch (None when the length is unknown)."""
    projected_kwh: float | None
    """Forecast energy at the end of training (None when the length is unknown)."""
    projected_co2eq_kg: float | None
    """Forecast CO2eq at the end of training (None when it or the intensity is unknown)."""


class TrainingEnergy:
    """Per-epoch energy, a forecast, and a budget stop for one training; framework-agnostic.

    >>> energy = TrainingEnergy(max_kwh=2.0)
    >>> with mlflow.start_run():
    ...     energy.begin(total_epochs=10)
    ...     for epoch in range(10):
    ...         train_one_epoch()
    ...         if energy.epoch_end(epoch):
    ...             break  # the energy so far, or the forecast, exceeds 2 kWh
    ...     energy.end()

    Logs ``green/epoch_kwh`` (step = epoch), ``green/projected_kwh`` and
    ``green/projected_co2eq_kg`` on the run each epoch, and on a stop the tag
    ``green.stopped_by_budget`` (why, at which epoch) and a warning.

    Args:
        max_kwh: energy budget, kWh (facility energy, PUE applied).
        max_co2eq_kg: emissions budget, kg CO2eq.
        registered_model_name: read the budgets (``green.budget_kwh``,
            ``green.budget_co2eq_kg`` tags) of this registered model when training
            begins; with a budget given too, the smaller of each kind applies.
        run_id: the run to log to; by default the framework's run, else the active
            MLflow run, else the only run autolog measures in this process.

    Bad arguments raise ``ValueError`` here. After that nothing raises: a failure
    costs one warning and the training goes on; without a budget nothing is stopped.
    """

    def __init__(
        self,
        max_kwh: float | None = None,
        max_co2eq_kg: float | None = None,
        registered_model_name: str | None = None,
        *,
        run_id: str | None = None,
    ) -> None:
        self._given = given_limits(max_kwh, max_co2eq_kg)
        self.registered_model_name = check_model_name(registered_model_name)
        if run_id is not None and (not isinstance(run_id, str) or not run_id.strip()):
            raise ValueError(f"run_id must be an MLflow run id (a string), got {run_id!r}")
        self._run_id_given = run_id
        self._reset()

    def _reset(self) -> None:
        self.limits: dict[str, Limit] = dict(self._given)
        self.run_id: str | None = None
        self.history: list[EpochEnergy] = []
        self.stop_reason: str | None = None
        self._client: Any = None
        self._log = True
        self._meter: Meter | None = None
        self._start: Reading | None = None
        self._last: Reading | None = None
        self._total_epochs: int | None = None
        self._done_before: float | None = None
        self._unit = "epochs"
        self._pending: list[Any] = []
        self._pending_tags: dict[str, str] = {}
        self._warned: set[str] = set()
        self._broken = False

    # --- the three hooks ------------------------------------------------------------------

    def begin(
        self,
        total_epochs: int | None = None,
        *,
        run_id: str | None = None,
        client: Any = None,
        log: bool = True,
        progress_unit: str = "epochs",
        done_before: float | None = None,
    ) -> None:
        """Training starts: find the run and the budgets, start measuring.

        ``total_epochs`` gives the forecast its denominator when :meth:`epoch_end` gets no
        ``fraction_done``; ``client`` is the ``MlflowClient`` the framework logs with;
        ``log=False`` (a distributed job's other ranks) measures and decides, logs nothing.
        ``done_before`` is the share of training a resumed training had done before (by
        default 0, or the first epoch :meth:`epoch_end` sees over ``total_epochs``): the
        forecast extrapolates this session's energy over the share left to it.
        """
        self.end()  # a training that raised last time never ended: close its window
        self._reset()
        try:
            self._done_before = _share(done_before)
            self._total_epochs = positive_int(total_epochs)
            self._unit = progress_unit
            self._log = log
            self.run_id = self._run_id_given or run_id or target_run_id()
            self._client = client
            self._meter = Meter(self.run_id)
            self._start = self._last = self._meter.read()
            if not self._meter.whole_run and self.run_id is not None and log:
                self._carry_on_from_the_runs_epochs()
            if self.registered_model_name is not None:
                self._read_registry_budget()
            co2eq = self.limits.get("co2eq")
            if co2eq is not None and self._start.g_per_kwh is None:
                self._warn_once(
                    "co2eq unknown",
                    f"the budget {co2eq.source} = {co2eq.value:g} kg cannot be applied: the "
                    "carbon intensity is unknown (the run's green.carbon_intensity_source says "
                    "why); the training is not stopped for CO2eq (a registered model's CO2eq "
                    "budget refuses a version whose CO2eq is unknown)",
                )
            if self.run_id is None and log:
                self._warn_once(
                    "no run",
                    "the training has no MLflow run (no active run, none measured by autolog, "
                    "no run_id=): its per-epoch energy is measured, not logged",
                )
            self._pending_tags[PROJECTION_TAG] = (
                "linear: energy before training + training energy so far / fraction of "
                f"training done ({self._unit}); "
                + ("the run's energy (autolog)" if self._meter.whole_run else "the training's")
            )
        except Exception as exc:
            self._fail("starting", exc)

    def epoch_end(self, epoch: int, fraction_done: float | None = None) -> bool:
        """An epoch ended: log its energy and the forecast; True when training should stop.

        ``fraction_done`` is the share of training done (0-1], e.g. steps done / total
        steps; by default ``(epoch + 1) / total_epochs``. Once stopped, stays True.
        """
        stopped = self.stop_reason is not None  # a framework may go on (min_epochs): log on
        if self._broken or self._meter is None or self._last is None or self._start is None:
            return stopped
        try:
            now = self._meter.read()
            fraction = self._fraction(epoch, fraction_done)
            row = self._row(epoch, now, fraction)
            self._last = now
            self.history.append(row)
            self._queue(row)
            reason = None if stopped else self._over_budget(row, now)
            if reason is not None:
                self.stop_reason = f"epoch {epoch}: {reason}"
                self._pending_tags[STOPPED_TAG] = self.stop_reason
                warn(f"mlflow-green: stopping the training at {self.stop_reason}", stacklevel=3)
        except Exception as exc:
            self._fail("measuring an epoch", exc)
            return stopped
        self._send_safely()
        return self.stop_reason is not None

    def end(self) -> None:
        """Training ended: send what is still to log and stop measuring."""
        try:
            self._send_safely()
        finally:
            if self._meter is not None:
                self._meter.close()
            self._meter = None

    # --- figures ---------------------------------------------------------------------------

    def _fraction(self, epoch: int, given: float | None) -> float | None:
        if given is not None:
            if self._done_before is None:
                self._done_before = 0.0
            value = float(given)
            return min(1.0, value) if math.isfinite(value) and value > 0 else None
        if self._total_epochs is None:
            return None
        if self._done_before is None:  # a resumed training starts at a later epoch
            self._done_before = min(1.0, max(0, int(epoch)) / self._total_epochs)
        return min(1.0, (int(epoch) + 1) / self._total_epochs)

    def _session_share(self, fraction: float) -> float | None:
        """The share of this session's training done, from the whole training's ``fraction``."""
        before = self._done_before or 0.0
        if before >= 1.0 or fraction <= before:
            return None
        return (fraction - before) / (1.0 - before)

    def _row(self, epoch: int, now: Reading, fraction: float | None) -> EpochEnergy:
        assert self._start is not None and self._last is not None
        trained_kwh = now.energy_kwh - self._start.energy_kwh
        projected = None
        share = self._session_share(fraction) if fraction is not None else None
        if share is not None:
            projected = self._start.energy_kwh + trained_kwh / share
        projected_co2 = None
        if projected is not None and now.g_per_kwh is not None:
            projected_co2 = projected * now.g_per_kwh / 1000.0
        return EpochEnergy(
            int(epoch),
            now.energy_kwh - self._last.energy_kwh,
            now.energy_kwh,
            fraction,
            projected,
            projected_co2,
        )

    def _over_budget(self, row: EpochEnergy, now: Reading) -> str | None:
        for kind, limit in self.limits.items():
            noun, unit, _ = KINDS[kind]
            actual = row.total_kwh if kind == "energy" else now.co2eq_kg
            projected = row.projected_kwh if kind == "energy" else row.projected_co2eq_kg
            budget = f"{limit.source} = {limit.value:g} {unit}"
            if actual is not None and actual > limit.value:
                return f"{noun} so far {actual:.4g} {unit} exceeds {budget}"
            finishing = row.fraction_done is not None and row.fraction_done >= 1.0
            if projected is not None and not finishing and projected > limit.value:
                return (
                    f"projected {noun} at the end of training {projected:.4g} {unit} "
                    f"({row.fraction_done:.0%} done) exceeds {budget}"
                )
        return None

    # --- MLflow ------------------------------------------------------------------------------

    def _read_registry_budget(self) -> None:
        uri = getattr(self._logging_client(), "tracking_uri", None)
        name = self.registered_model_name or ""
        found, problems = read_registry_limits(uri, name, LEAVING_PROBE_TIMEOUT_S)
        self.limits = tightest(self._given, found)
        for problem in problems:
            self._warn_once(problem, problem)

    def _carry_on_from_the_runs_epochs(self) -> None:
        """A training resumed in a run that already holds epochs (measured by this callback,
        not by autolog) is budgeted from their sum: the run's total, not this session's."""
        assert self._meter is not None and self._start is not None
        client = self._logging_client()
        if probe(client, timeout_s=LEAVING_PROBE_TIMEOUT_S) is not None:
            return  # _send warns once the server is seen down
        history = client.get_metric_history(self.run_id, "green/epoch_kwh")
        before = sum(m.value for m in history if math.isfinite(m.value))
        if before > 0:
            self._meter.carry_on_from(before)
            self._start = self._last = self._meter.read()

    def _logging_client(self) -> Any:
        if self._client is not None:
            return self._client
        state = current()
        tracked = state.runs.get(self.run_id) if state is not None and self.run_id else None
        if tracked is not None:
            return tracked.client
        from mlflow import MlflowClient

        self._client = MlflowClient()
        return self._client

    def _queue(self, row: EpochEnergy) -> None:
        from mlflow.entities import Metric

        ms = int(time.time() * 1000)
        values = {
            "green/epoch_kwh": row.energy_kwh,
            "green/projected_kwh": row.projected_kwh,
            "green/projected_co2eq_kg": row.projected_co2eq_kg,
        }
        for key, value in values.items():
            if value is not None and math.isfinite(value):
                self._pending.append(Metric(key, value, ms, row.epoch))

    def _send_safely(self) -> None:
        try:
            self._send()
        except Exception as exc:  # kept for the next epoch; the budget still applies
            self._warn_once("log", f"could not log the per-epoch energy ({exc!r}); retrying later")

    def _send(self) -> None:
        """Log what is pending, unless the server is down (then it waits for the next epoch:
        MLflow would retry for minutes inside the training loop)."""
        if not self._log or self.run_id is None or not (self._pending or self._pending_tags):
            return
        from mlflow.entities import RunTag

        client = self._logging_client()
        down = probe(client, timeout_s=LEAVING_PROBE_TIMEOUT_S)
        if down is not None:
            self._warn_once("down", f"per-epoch energy not logged yet: {down}")
            return
        tags = [RunTag(k, v) for k, v in self._pending_tags.items()]
        client.log_batch(self.run_id, metrics=list(self._pending), params=[], tags=tags)
        self._pending, self._pending_tags = [], {}

    # --- failures -------------------------------------------------------------------------------

    def _warn_once(self, key: str, message: str) -> None:
        if key in self._warned:
            return
        self._warned.add(key)
        state = current()
        if state is not None:
            state.warn(message)
        else:
            warn(f"mlflow-green: {message}", RuntimeWarning, stacklevel=4)

    def _fail(self, what: str, exc: Exception) -> None:
        self._broken = True
        self._warn_once(
            f"fail {what}",
            f"the training callback failed while {what} ({exc!r}); training goes on, "
            "without the per-epoch energy and budget from here",
        )


class BudgetedCallback:
    """What every framework adapter shares: its arguments (those of :class:`TrainingEnergy`)
    and its core, ``self.energy``. Listed first among an adapter's bases, so that the
    framework's own callback class is initialised after it."""

    def __init__(
        self,
        max_kwh: float | None = None,
        max_co2eq_kg: float | None = None,
        registered_model_name: str | None = None,
        *,
        run_id: str | None = None,
    ) -> None:
        super().__init__()
        self.energy = TrainingEnergy(max_kwh, max_co2eq_kg, registered_model_name, run_id=run_id)


def _share(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if 0.0 <= number < 1.0 else None


def positive_int(value: Any) -> int | None:
    """``value`` as an int when it is a whole number > 0 (a length of training), else None."""
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if number > 0 else None
