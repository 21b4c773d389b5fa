"""Where a training's energy so far is read: the run autolog measures, or a window of its own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlflow_green.measure.config import MeasureConfig
from mlflow_green.measure.report import EnergyReport
from mlflow_green.measure.tracker import Tracker
from mlflow_green.runs.tracked import current


@dataclass(frozen=True)
class Reading:
    """Energy so far: ``energy_kwh`` (facility, PUE applied), ``co2eq_kg`` (None when the
    intensity is unknown) and the intensity in gCO2eq/kWh used for it."""

    energy_kwh: float
    co2eq_kg: float | None
    g_per_kwh: float | None


def _reading(report: EnergyReport, base: dict[str, float] | Reading | None = None) -> Reading:
    if isinstance(base, Reading):  # carry on from an earlier reading
        base = {"green/energy_kwh": base.energy_kwh, "green/co2eq_kg": base.co2eq_kg or 0.0}
    base = base or {}
    co2 = report.co2eq_kg
    return Reading(
        report.energy_kwh + base.get("green/energy_kwh", 0.0),
        None if co2 is None else co2 + base.get("green/co2eq_kg", 0.0),
        report.carbon_intensity_g_per_kwh,
    )


def _own_config() -> MeasureConfig:
    """The settings of a training measured without autolog, from ``MLFLOW_GREEN_*``. Energy
    does not depend on the location: a bad location variable leaves the CO2eq unknown (one
    warning), as in zero-code mode, and the energy budget still applies."""
    from mlflow_green._warnings import warn
    from mlflow_green.measure.config import resolve_location

    intensity, notes = resolve_location(unknown_location_ok=True)
    for note in notes:
        warn(f"mlflow-green: training callback: {note}", RuntimeWarning, stacklevel=2)
    return MeasureConfig._with(intensity, None, None, None)


class Meter:
    """Reads the energy of a training so far.

    When autolog measures the run the training logs to, it is that run's energy (so the
    forecast and the budget speak of the figure the registry's gate compares: the whole
    run, earlier sessions of a resumed run included); otherwise a window opened at the
    training's start measures the training alone.
    """

    def __init__(self, run_id: str | None) -> None:
        state = current()
        tracked = state.runs.get(run_id) if state is not None and run_id else None
        if tracked is not None and not tracked.window.closed:
            self._tracked: Any = tracked
            self._config = state.config.measure  # type: ignore[union-attr]
            self._own: Tracker | None = None
        else:
            self._tracked = None
            self._config = state.config.measure if state is not None else _own_config()
            self._own = Tracker("training", self._config).start()
        self._offset: Reading | None = None

    @property
    def whole_run(self) -> bool:
        """Whether the readings are the run's energy (autolog measures it), not the training's."""
        return self._tracked is not None

    def read(self) -> Reading:
        """The energy so far (the GPU's pending work waited for, as at a run's end)."""
        if self._tracked is not None and not self._tracked.window.closed:
            report = EnergyReport.from_measurement(self._tracked.window.snapshot(), self._config)
            self._offset = _reading(report, self._tracked.base)
            return self._offset
        if self._own is None:  # the run ended under the training: measure on from there
            self._own = Tracker("training", self._config).start()
            self._tracked = None
        return _reading(self._own.report, self._offset)

    def carry_on_from(self, energy_kwh: float) -> None:
        """Count ``energy_kwh`` (earlier sessions of the run) before this training's own."""
        g = self._config.intensity.g_per_kwh
        co2 = None if g is None else energy_kwh * g / 1000.0
        self._offset = Reading(energy_kwh, co2, g)

    def close(self) -> None:
        """Close the training's own window, if it has one."""
        if self._own is not None:
            self._own.stop()
