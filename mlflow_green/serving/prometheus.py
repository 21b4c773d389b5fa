"""The Prometheus exporter: one per host (the host meter), over the session's summed counts.

A custom collector reads the totals at each scrape, so every worker's counts
appear once, without ``prometheus_client``'s multiprocess mode. Joules are
device-level (no PUE), like every joule figure of the package; grams of CO2eq
follow the serving run's ``green/co2eq_kg`` (PUE applied).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Totals:
    """A serving session's cumulative figures at one moment."""

    energy_j_by_domain: dict[str, float] = field(default_factory=dict)
    co2eq_g: float | None = None
    requests: int = 0
    predictions: int = 0
    tokens: int = 0


class _Collector:
    def __init__(self, read: Callable[[], Totals]) -> None:
        self._read = read

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        totals = self._read()
        energy = CounterMetricFamily(
            "mlflow_green_energy_joules",
            "Energy of the serving host by domain since serving started (device level, no PUE)",
            labels=["domain"],
        )
        for domain, joules in sorted(totals.energy_j_by_domain.items()):
            energy.add_metric([domain], joules)
        yield energy
        if totals.co2eq_g is not None:
            yield CounterMetricFamily(
                "mlflow_green_co2eq_grams",
                "Emissions of the serving host, grams CO2eq (PUE applied)",
                value=totals.co2eq_g,
            )
        for name, value, what in (
            ("requests", totals.requests, "Requests to /invocations, all workers"),
            ("predictions", totals.predictions, "Predictions (rows) returned, all workers"),
            ("tokens", totals.tokens, "Tokens of the text returned, all workers"),
        ):
            yield CounterMetricFamily(f"mlflow_green_{name}", what, value=value)


class Exporter:
    """An HTTP endpoint serving the collector's metrics on ``port``."""

    def __init__(self, port: int, read: Callable[[], Totals]) -> None:
        from prometheus_client import CollectorRegistry, start_http_server

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(read))
        self._server, self._thread = start_http_server(port, registry=registry)

    def close(self) -> None:
        """Stop serving the endpoint."""
        self._server.shutdown()
        self._server.server_close()
