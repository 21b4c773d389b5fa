"""``track()``: the energy and emissions of any block of code, with or without MLflow."""

from __future__ import annotations

import time
from types import TracebackType

from mlflow_green._warnings import warn
from mlflow_green.measure.config import MeasureConfig
from mlflow_green.measure.meters.base import DOMAINS
from mlflow_green.measure.monitor import Measurement, Window, get_monitor
from mlflow_green.measure.report import EnergyReport


class Tracker:
    """Context manager measuring the block it wraps; see :func:`track`."""

    def __init__(self, name: str, config: MeasureConfig) -> None:
        self.name = name
        self.config = config
        self._window: Window | None = None
        self._report: EnergyReport | None = None
        self._failure = "not started"

    def start(self) -> Tracker:
        """Open the measurement window (``with`` does this)."""
        try:
            self._window = get_monitor().open(
                self.name, self.config.scope, self.config.sample_interval_s
            )
        except Exception as exc:  # measuring must never break the measured code
            self._failure = f"could not start measuring: {exc!r}"
            warn(f"mlflow-green: {self._failure}", stacklevel=2)
        return self

    def stop(self) -> EnergyReport:
        """Close the window and return the final report (``with`` does this)."""
        if self._report is None:
            try:
                if self._window is None:
                    raise RuntimeError(self._failure)
                self._report = EnergyReport.from_measurement(self._window.close(), self.config)
            except Exception as exc:
                if self._window is not None:
                    self._failure = f"could not finish measuring: {exc!r}"
                    warn(f"mlflow-green: {self._failure}", stacklevel=2)
                self._report = self._unmeasured()
        return self._report

    @property
    def report(self) -> EnergyReport:
        """The final report once the block has ended; a live one while it runs.

        If measuring failed (one warning said why), a report of zero energy whose
        ``failures`` give the reason, so that reading it never breaks user code.
        """
        if self._report is not None:
            return self._report
        if self._window is None:
            return self._unmeasured()
        return EnergyReport.from_measurement(self._window.snapshot(), self.config)

    def _unmeasured(self) -> EnergyReport:
        methods = dict.fromkeys(DOMAINS, "none")
        empty = Measurement(
            self.name,
            time.time(),
            0.0,
            {},
            methods,
            {},
            self.config.scope,
            failures=dict.fromkeys(DOMAINS, self._failure),
        )
        return EnergyReport.from_measurement(empty, self.config)

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
    price_per_kwh: float | None = None,
    currency: str | None = None,
    wue_l_per_kwh: float | None = None,
    electricity_water_l_per_kwh: float | None = None,
    embodied_co2eq_kg: float | None = None,
    lifetime_years: float | None = None,
    reserved_share: float | None = None,
) -> Tracker:
    """Measure the energy and emissions of a block of code; no MLflow run needed.

    >>> with mlflow_green.track(country="FRA") as t:
    ...     train()
    >>> t.report.energy_kwh, t.report.co2eq_kg

    Arguments are those of :func:`mlflow_green.autolog` (location, intensity in
    gCO2eq/kWh from 0 to 2000, PUE from 1.0 to 3.0, ``scope`` "machine" or
    "process", sample interval from 0.05 to 3600 seconds; see
    :mod:`mlflow_green.measure.config`), and the footprint settings (``price_per_kwh``
    in ``currency``, ``wue_l_per_kwh`` and ``electricity_water_l_per_kwh``,
    ``embodied_co2eq_kg`` over ``lifetime_years`` at ``reserved_share``; see
    :mod:`mlflow_green.measure.footprint`) that give ``report.cost``, ``report.water_l``
    and ``report.embodied_co2eq_kg``; unset ones come from ``MLFLOW_GREEN_<NAME>``
    variables. Bad values raise ``ValueError`` here, naming the value, the
    argument or variable it came from, and what is accepted.
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
        price_per_kwh=price_per_kwh,
        currency=currency,
        wue_l_per_kwh=wue_l_per_kwh,
        electricity_water_l_per_kwh=electricity_water_l_per_kwh,
        embodied_co2eq_kg=embodied_co2eq_kg,
        lifetime_years=lifetime_years,
        reserved_share=reserved_share,
    )
    return Tracker(name, config)
