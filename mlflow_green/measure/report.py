"""The ``EnergyReport``: one measurement with PUE and carbon intensity applied.

Joules inside, kWh at the boundary: joules (``energy_j_by_domain``) and watts
(the timeline) are what the devices drew, as measured or estimated; every kWh
figure is what the facility drew for them, PUE applied, so the domains' kWh add
up to ``energy_kwh``; ``co2eq_kg`` follows from it, unless the carbon intensity is
unknown (a bad location setting in zero-code mode): then ``co2eq_kg`` is ``None``,
no ``green/co2eq_kg`` metric is logged, and every rendering says "unknown".
The footprint beyond CO2eq (cost, water, embodied emissions) follows from the
report's :class:`~mlflow_green.measure.footprint.Footprint` settings the same way:
a figure without its settings is ``None``, and ``report.json`` says why.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from mlflow_green import _version
from mlflow_green.measure.carbon import CarbonIntensity, co2eq_kg
from mlflow_green.measure.footprint import Figure, Footprint
from mlflow_green.measure.meters import DOMAINS
from mlflow_green.measure.sci import PER_RUN, SCIScore, sci

if TYPE_CHECKING:
    import pandas as pd

    from mlflow_green.measure.config import MeasureConfig
    from mlflow_green.measure.monitor import Measurement

J_PER_KWH = 3.6e6
#: How an unknown figure is shown in tags, text and plots (JSON has ``null``).
UNKNOWN = "unknown"


@dataclass(frozen=True)
class TimelinePoint:
    """Average power per domain over the interval ending ``t_s`` seconds after the start."""

    t_s: float
    power_w: dict[str, float]


@dataclass(frozen=True)
class EnergyReport:
    """Energy and emissions of one measured block of work.

    Energies by domain and device are in joules at the device (no PUE);
    ``energy_kwh`` and ``co2eq_kg`` include the PUE.
    """

    name: str
    start_time_s: float
    """Wall-clock start, seconds since the epoch."""
    duration_s: float
    energy_j_by_domain: dict[str, float]
    """Joules per domain (``gpu``, ``cpu``, ``ram``) at the device, no PUE."""
    energy_j_by_device: dict[str, dict[str, float]]
    """Joules per domain and device id (GPU UUID, ``package-0``, ...)."""
    methods: dict[str, str]
    """How each domain was measured: ``nvml-energy-counter``, ``rapl``, ``estimate-tdp``, ..."""
    hardware: dict[str, str]
    scope: str
    """``machine`` (whole machine) or ``process`` (this process tree's share of it)."""
    pue: float
    carbon_intensity_g_per_kwh: float | None
    """Grid intensity used, gCO2eq per kWh; ``None`` when unknown (then so are emissions)."""
    intensity_source: str
    """Where the intensity comes from; for an unknown one, ``"unknown: "`` and why."""
    country: str | None
    region: str | None
    cloud_provider: str | None = None
    cloud_region: str | None = None
    timeline: list[TimelinePoint] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    """Domain -> why its meter stopped early (energy after that point is missing)."""
    footprint: Footprint = field(default_factory=Footprint)
    """Cost, water and embodied-emissions settings; see :attr:`footprint_figures`."""
    gpu_whole_j_by_device: dict[str, float] = field(default_factory=dict)
    """With ``scope="process"``: each GPU's whole energy in joules (the counter's figure)
    over the window, beside the share attributed to this process tree in
    ``energy_j_by_device["gpu"]``; empty with ``scope="machine"``."""
    version: str = _version.__version__

    @classmethod
    def from_measurement(cls, m: Measurement, config: MeasureConfig) -> EnergyReport:
        """Apply ``config``'s PUE and carbon intensity to a monitor measurement."""
        from mlflow_green.measure.hourly import applied

        # An hourly intensity (series, provider) becomes this measurement's weighted mean.
        intensity: CarbonIntensity = applied(config.intensity, m.start_time_s, m.timeline)
        return cls(
            name=m.name,
            start_time_s=m.start_time_s,
            duration_s=m.duration_s,
            energy_j_by_domain={d: sum(m.energy_j_by_device.get(d, {}).values()) for d in DOMAINS},
            energy_j_by_device={d: dict(m.energy_j_by_device.get(d, {})) for d in DOMAINS},
            methods=dict(m.methods),
            hardware=dict(m.hardware),
            scope=m.scope,
            pue=config.pue,
            carbon_intensity_g_per_kwh=intensity.g_per_kwh,
            intensity_source=intensity.source,
            country=intensity.country,
            region=intensity.region,
            cloud_provider=intensity.cloud_provider,
            cloud_region=intensity.cloud_region,
            timeline=[TimelinePoint(t, dict(p)) for t, p in m.timeline],
            failures=dict(m.failures),
            footprint=config.footprint,
            gpu_whole_j_by_device=dict(m.gpu_whole_j_by_device),
        )

    @property
    def device_energy_j(self) -> float:
        """Joules drawn by all measured devices, no PUE."""
        return sum(self.energy_j_by_domain.values())

    @property
    def energy_kwh(self) -> float:
        """Total energy in kWh, PUE applied."""
        return self.device_energy_j * self.pue / J_PER_KWH

    @property
    def energy_kwh_by_domain(self) -> dict[str, float]:
        """kWh per domain, PUE applied like every kWh figure, so that the domains add up to
        ``energy_kwh``; logged under ``green/energy/``."""
        return {d: j * self.pue / J_PER_KWH for d, j in self.energy_j_by_domain.items()}

    @property
    def co2eq_kg(self) -> float | None:
        """Emissions in kg CO2-equivalent; ``None`` when the carbon intensity is unknown."""
        return co2eq_kg(self.energy_kwh, self.carbon_intensity_g_per_kwh)

    @property
    def device_energy_kwh(self) -> float:
        """kWh drawn by all measured devices, no PUE (what on-site WUE applies to)."""
        return self.device_energy_j / J_PER_KWH

    @property
    def footprint_figures(self) -> dict[str, Figure]:
        """``cost``, ``water_l`` and ``embodied_co2eq_kg``, each with its method (or why it
        is unknown), from this report's energy and duration."""
        return self.footprint.figures(self.energy_kwh, self.device_energy_kwh, self.duration_s)

    @property
    def cost(self) -> float | None:
        """``energy_kwh`` x ``price_per_kwh``, in ``footprint.currency``; ``None`` without a
        price."""
        return self.footprint.cost(self.energy_kwh).value

    @property
    def water_l(self) -> float | None:
        """Litres of water: device kWh x on-site WUE (+ kWh x the electricity's water
        intensity, when given); ``None`` without a WUE."""
        return self.footprint.water_l(self.device_energy_kwh, self.energy_kwh).value

    @property
    def embodied_co2eq_kg(self) -> float | None:
        """The run's share of the machine's manufacturing emissions (SCI's M), kg CO2eq;
        ``None`` without the machine's embodied emissions and lifetime."""
        return self.footprint.embodied(self.duration_s).value

    @property
    def sci(self) -> SCIScore:
        """Software Carbon Intensity per run, ``(E x I + M) / R`` with R = this run, in
        grams; unknown without a carbon intensity or the embodied emissions (M)."""
        return sci(self.co2eq_kg, self.embodied_co2eq_kg, 1, PER_RUN)

    @property
    def mean_power_w(self) -> dict[str, float]:
        """Average power per domain over the whole window, in watts."""
        d = self.duration_s
        return {k: (j / d if d > 0 else 0.0) for k, j in self.energy_j_by_domain.items()}

    def to_dict(self) -> dict[str, Any]:
        """Every figure, the methods and the configuration, JSON-ready; ``footprint`` holds
        the footprint settings and each footprint figure with its method, and
        ``gpu_whole_j_by_device`` the GPUs' whole energy beside a process-scope share."""
        out = asdict(self)
        out["timeline"] = [
            {"t_s": p.t_s, **{f"{k}_w": v for k, v in p.power_w.items()}} for p in self.timeline
        ]
        out.update(
            energy_kwh=self.energy_kwh,
            co2eq_kg=self.co2eq_kg,
            device_energy_j=self.device_energy_j,
            energy_kwh_by_domain=self.energy_kwh_by_domain,
            footprint=self.footprint.to_dict(
                self.energy_kwh, self.device_energy_kwh, self.duration_s
            ),
            sci=self.sci.to_dict(),
        )
        return out

    def to_json(self, **kwargs: Any) -> str:
        """:meth:`to_dict` as JSON; ``kwargs`` go to :func:`json.dumps` (e.g. ``indent=2``)."""
        return json.dumps(self.to_dict(), **kwargs)

    def timeline_frame(self) -> pd.DataFrame:
        """The power timeline as a DataFrame: ``t_s`` and ``<domain>_w`` columns."""
        import pandas as pd

        columns = ["t_s", *(f"{d}_w" for d in DOMAINS)]
        return pd.DataFrame(self.to_dict()["timeline"], columns=columns)

    def __str__(self) -> str:
        parts = ", ".join(
            f"{d} {j:.1f} J ({self.methods.get(d, 'none')})"
            for d, j in self.energy_j_by_domain.items()
        )
        return (
            f"{self.name}: {self.energy_kwh:.6g} kWh, {or_unknown(self.co2eq_kg, '.6g')} kg CO2eq "
            f"in {self.duration_s:.2f} s [{parts}; PUE {self.pue:g}, "
            f"{or_unknown(self.carbon_intensity_g_per_kwh)} g/kWh]"
        )


def or_unknown(value: float | None, spec: str = "g") -> str:
    """``value`` formatted with ``spec``, or "unknown"."""
    return UNKNOWN if value is None else format(value, spec)
