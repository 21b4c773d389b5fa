"""``track()``: the energy and emissions of any block of code, with or without MLflow."""

from __future__ import annotations

from types import TracebackType

from mlflow_green._warnings import warn
from mlflow_green.config import MeasureConfig
from mlflow_green.monitor import Window, get_monitor
from mlflow_green.report import EnergyReport


class Tracker:
    """Context manager measuring the block it wraps; see :func:`track`."""

    def __init__(self, name: str, config: MeasureConfig) -> None:
        self.name = name
        self.config = config
        self._window: Window | None = None
        self._report: EnergyReport | None = None

    def start(self) -> Tracker:
        """Open the measurement window (``with`` does this)."""
        try:
            self._window = get_monitor().open(
                self.name, self.config.scope, self.config.sample_interval_s
            )
        except Exception as exc:  # measuring must never break the measured code
            warn(f"mlflow-green: could not start measuring: {exc!r}", stacklevel=2)
        return self

    def stop(self) -> EnergyReport | None:
        """Close the window and return the final report (``with`` does this)."""
        if self._window is not None and self._report is None:
            try:
                self._report = EnergyReport.from_measurement(self._window.close(), self.config)
            except Exception as exc:
                warn(f"mlflow-green: could not finish measuring: {exc!r}", stacklevel=2)
        return self._report

    @property
    def report(self) -> EnergyReport | None:
        """The final report once the block has ended; a live one while it runs."""
        if self._report is not None or self._window is None:
            return self._report
        return EnergyReport.from_measurement(self._window.snapshot(), self.config)

    def __enter__(self) -> Tracker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()  # never swallows the block's exception


def track(
    name: str = "track",
    *,
    country: str | None = None,
    region: str | None = None,
    cloud_provider: str | None = None,
    cloud_region: str | None = None,
    carbon_intensity: float | None = None,
    pue: float | None = None,
    scope: str | None = None,
    sample_interval_s: float | None = None,
) -> Tracker:
    """Measure the energy and emissions of a block of code; no MLflow run needed.

    >>> with mlflow_green.track(country="FRA") as t:
    ...     train()
    >>> t.report.energy_kwh, t.report.co2eq_kg

    Arguments are those of :func:`mlflow_green.autolog` (location, intensity in
    gCO2eq/kWh, PUE >= 1, ``scope`` "machine" or "process", sample interval in
    seconds); unset ones come from ``MLFLOW_GREEN_<NAME>`` variables. Bad values
    raise ``ValueError`` here, naming the value and what is accepted.
    """
    config = MeasureConfig.build(
        country=country,
        region=region,
        cloud_provider=cloud_provider,
        cloud_region=cloud_region,
        carbon_intensity=carbon_intensity,
        pue=pue,
        scope=scope,
        sample_interval_s=sample_interval_s,
    )
    return Tracker(name, config)
