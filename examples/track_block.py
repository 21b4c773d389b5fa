"""Measure any block of code, with no MLflow run: ``mlflow_green.track()``.

python examples/track_block.py
"""

from __future__ import annotations

import time

import mlflow_green


def work(seconds: float) -> int:
    total, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        total += sum(i * i for i in range(10_000))
    return total


if __name__ == "__main__":
    with mlflow_green.track("busy loop", country="FRA", pue=1.2) as t:
        work(2.0)
    report = t.report
    print(report)
    for domain, joules in report.energy_j_by_domain.items():
        print(
            f"  {domain}: {joules:8.2f} J by {report.methods[domain]}  ({report.hardware[domain]})"
        )
    print(
        f"  total {report.energy_kwh * 1000:.5f} Wh (PUE {report.pue}), "
        f"{report.co2eq_kg * 1000:.6f} g CO2eq at {report.carbon_intensity_g_per_kwh} g/kWh"
    )
