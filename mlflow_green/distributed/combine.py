"""Adding up the ranks' measurements of a job, counting every device once.

Pure functions over plain dicts (what travels through the store as JSON), so
they are the same on every rank and testable without a job.

Every rank measures what it sees; ownership decides who is counted for what:

* a GPU belongs to the lowest rank that claims it (see ``job.claimed_gpus``),
  or, if none does, to the lowest rank that reported it; UUIDs are unique
  across nodes, so a GPU is counted once in the whole job;
* a node's CPU packages and RAM belong to the lowest rank on that node (as in
  perun), unless measured with ``scope="process"``: then each rank's share is
  its own and the shares add up;
* when an owner's report is missing (the rank died), another rank on the same
  node that saw the device stands in, so a survivor still counts its host.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlflow_green.measure.carbon import co2eq_kg
from mlflow_green.measure.footprint import FOOTPRINT_FIGURES, Figure, Footprint
from mlflow_green.measure.meters import DOMAINS
from mlflow_green.measure.report import J_PER_KWH

Contribution = dict[str, Any]
"""One rank's report for one run: ``rank``, ``node``, ``final``, ``own_runs``, ``scope``,
``start_time_s``, ``duration_s``, ``energy_j`` (domain -> device -> J, no PUE), ``methods``,
``hardware``, ``pue``, ``g_per_kwh``, ``country``, ``region``, ``intensity_source``,
``footprint`` (the footprint settings)."""


def contribution(report: Any, rank: int, node: str, final: bool, own_runs: bool) -> Contribution:
    """What a rank sends for one run, from its ``EnergyReport``."""
    return {
        "rank": rank,
        "node": node,
        "final": final,
        "own_runs": own_runs,
        "scope": report.scope,
        "start_time_s": report.start_time_s,
        "duration_s": report.duration_s,
        "energy_j": {d: dict(devs) for d, devs in report.energy_j_by_device.items()},
        "methods": dict(report.methods),
        "hardware": dict(report.hardware),
        "pue": report.pue,
        "g_per_kwh": report.carbon_intensity_g_per_kwh,
        "country": report.country,
        "region": report.region,
        "intensity_source": report.intensity_source,
        "footprint": report.footprint.settings(),
    }


def unmeasured(rank: int, node: str, own_runs: bool) -> Contribution:
    """The answer of a rank that did not measure a run (it joined after the run ended):
    not final, so the rank is listed as missing, and no energy."""
    return {
        "rank": rank,
        "node": node,
        "final": False,
        "own_runs": own_runs,
        "scope": "machine",
        "energy_j": {},
    }


def _key(domain: str, device: str, node: str, rank: int, scope: str) -> tuple:
    if domain == "gpu":
        return ("gpu", device)
    if scope == "process":  # a process share: every rank's is its own
        return (domain, node, device, rank)
    return (domain, node, device)


def _owner(key: tuple, nodes: dict[int, dict[str, Any]]) -> int | None:
    """The rank that should count ``key``, from the ranks' self-descriptions (``nodes``)."""
    if key[0] == "gpu":
        claimants = [r for r, n in nodes.items() if key[1] in n.get("claims", ())]
        return min(claimants, default=None)
    if len(key) == 4:
        return key[3]
    on_node = [r for r, n in nodes.items() if n.get("node") == key[1]]
    return min(on_node, default=None)


def owned_energy_j(
    contrib: Contribution, nodes: dict[int, dict[str, Any]]
) -> dict[str, dict[str, float]]:
    """The part of one rank's measurement that rank owns: its share when every rank logs its
    own run. Devices whose owner cannot be told stay in."""
    rank, node, scope = contrib["rank"], contrib["node"], contrib["scope"]
    out: dict[str, dict[str, float]] = {}
    for domain, devices in contrib["energy_j"].items():
        for device, joules in devices.items():
            owner = _owner(_key(domain, device, node, rank, scope), nodes)
            if owner is None or owner == rank:
                out.setdefault(domain, {})[device] = joules
    return out


@dataclass(frozen=True)
class NodeEnergy:
    """One node's energy in a job, with that node's PUE and grid intensity."""

    node_id: str
    ranks: list[int]
    """Ranks whose reports are counted for this node."""
    energy_j_by_domain: dict[str, float]
    """Joules per domain at the devices (no PUE)."""
    pue: float
    carbon_intensity_g_per_kwh: float | None
    """``None`` when the node's intensity is unknown (then so are its emissions)."""
    country: str | None = None
    region: str | None = None
    footprint: Footprint = field(default_factory=Footprint)
    """The node's cost, water and embodied settings (a node is one machine)."""
    duration_s: float = 0.0
    """The counted report's duration: the time the machine's embodied share is for."""

    @property
    def energy_kwh(self) -> float:
        """kWh drawn by the facility for this node (PUE applied)."""
        return sum(self.energy_j_by_domain.values()) * self.pue / J_PER_KWH

    @property
    def footprint_figures(self) -> dict[str, Figure]:
        """This node's cost, water and embodied emissions (``None`` values when unknown)."""
        device_kwh = sum(self.energy_j_by_domain.values()) / J_PER_KWH
        return self.footprint.figures(self.energy_kwh, device_kwh, self.duration_s)

    @property
    def co2eq_kg(self) -> float | None:
        """kg CO2eq at this node's grid intensity; ``None`` when that is unknown."""
        return co2eq_kg(self.energy_kwh, self.carbon_intensity_g_per_kwh)


@dataclass(frozen=True)
class JobEnergy:
    """The whole job's energy for one run, node by node."""

    world_size: int
    nodes: dict[str, NodeEnergy]
    missing_ranks: list[int] = field(default_factory=list)
    """Ranks with no final report after the wait (their last live report, if any, counts)."""
    own_run_ranks: list[int] = field(default_factory=list)
    """Ranks that log runs of their own: what they own is in those runs, not here."""
    reports: list[Contribution] = field(default_factory=list)

    @property
    def energy_kwh(self) -> float:
        """Total kWh of every node, each with its own PUE."""
        return sum(n.energy_kwh for n in self.nodes.values())

    @property
    def co2eq_kg(self) -> float | None:
        """Total kg CO2eq, each node at its own grid intensity; ``None`` when any node's
        intensity is unknown (a partial sum would pass for the whole job's)."""
        total = 0.0
        for node in self.nodes.values():
            co2eq = node.co2eq_kg
            if co2eq is None:
                return None
            total += co2eq
        return total

    def footprint(self) -> dict[str, float | None]:
        """Each footprint figure (``cost``, ``water_l``, ``embodied_co2eq_kg``) summed over the
        nodes; ``None`` when any node's is unknown, and the cost when nodes' currencies differ."""
        figures = [n.footprint_figures for n in self.nodes.values()]
        out: dict[str, float | None] = {}
        for name in FOOTPRINT_FIGURES:
            values = [f[name].value for f in figures]
            known = [v for v in values if v is not None]
            out[name] = sum(known) if known and len(known) == len(values) else None
        if len({n.footprint.currency for n in self.nodes.values()}) > 1:
            out["cost"] = None  # no sum of euros and dollars
        return out

    def energy_kwh_by_domain(self) -> dict[str, float]:
        """kWh per domain over all nodes (PUE applied): they add up to :attr:`energy_kwh`."""
        return {
            d: sum(n.energy_j_by_domain.get(d, 0.0) * n.pue for n in self.nodes.values())
            / J_PER_KWH
            for d in DOMAINS
        }

    def metrics(self) -> dict[str, float]:
        """The run's job-wide metrics: totals (``green/co2eq_kg`` only when every node's
        intensity is known), the footprint figures every node knows, domains and
        ``green/node/<node_id>_kwh``."""
        out = {"green/energy_kwh": self.energy_kwh}
        co2eq = self.co2eq_kg
        if co2eq is not None:
            out["green/co2eq_kg"] = co2eq
        out.update({f"green/{k}": v for k, v in self.footprint().items() if v is not None})
        out.update({f"green/energy/{d}_kwh": v for d, v in self.energy_kwh_by_domain().items()})
        out.update({f"green/node/{n}_kwh": e.energy_kwh for n, e in self.nodes.items()})
        return out

    def tags(self) -> dict[str, str]:
        """``green.nodes``, ``green.ranks`` and, if any, ``green.missing_ranks``."""
        out = {"green.nodes": str(len(self.nodes)), "green.ranks": str(self.world_size)}
        if self.missing_ranks:
            out["green.missing_ranks"] = ",".join(map(str, self.missing_ranks))
        return out

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready (``green/nodes.json``)."""
        return {
            "world_size": self.world_size,
            "energy_kwh": self.energy_kwh,
            "co2eq_kg": self.co2eq_kg,
            **self.footprint(),
            "missing_ranks": self.missing_ranks,
            "own_run_ranks": self.own_run_ranks,
            "nodes": {
                n: {
                    "ranks": e.ranks,
                    "energy_j_by_domain": e.energy_j_by_domain,
                    "energy_kwh": e.energy_kwh,
                    "co2eq_kg": e.co2eq_kg,
                    "pue": e.pue,
                    "carbon_intensity_g_per_kwh": e.carbon_intensity_g_per_kwh,
                    "country": e.country,
                    "region": e.region,
                    "footprint": {
                        "settings": e.footprint.settings(),
                        **{k: f.to_dict() for k, f in e.footprint_figures.items()},
                    },
                }
                for n, e in self.nodes.items()
            },
            "reports": self.reports,
        }


def combine(
    reports: dict[int, Contribution], nodes: dict[int, dict[str, Any]], world_size: int
) -> JobEnergy:
    """Add up the ranks' ``reports`` (rank -> latest report), each device once.

    ``nodes`` maps rank -> ``{"node": id, "claims": [gpu uuids]}`` as each rank
    described itself. A rank with runs of its own keeps what it owns for them.
    """
    own = sorted(r for r, c in reports.items() if c.get("own_runs") and r != 0)
    # Who reported each device, and which report counts for it.
    seen: dict[tuple, list[int]] = {}
    for rank, c in reports.items():
        for domain, devices in c["energy_j"].items():
            for device in devices:
                seen.setdefault(_key(domain, device, c["node"], rank, c["scope"]), []).append(rank)
    node_j: dict[str, dict[str, float]] = {}
    node_ranks: dict[str, set[int]] = {}
    for key, ranks in seen.items():
        owner = _owner(key, nodes)
        if owner in own:
            continue  # in that rank's own run
        eligible = [r for r in ranks if r not in own]
        if not eligible:
            continue
        rank = owner if owner in eligible else min(eligible)
        c = reports[rank]
        domain, device = key[0], key[1] if key[0] == "gpu" else key[2]
        per_domain = node_j.setdefault(c["node"], dict.fromkeys(DOMAINS, 0.0))
        per_domain[domain] = per_domain.get(domain, 0.0) + c["energy_j"][domain][device]
        node_ranks.setdefault(c["node"], set()).add(rank)
    result: dict[str, NodeEnergy] = {}
    for node, joules in sorted(node_j.items()):
        # The node's PUE and intensity: its lowest counted rank's configuration.
        first = reports[min(node_ranks[node])]
        result[node] = NodeEnergy(
            node_id=node,
            ranks=sorted(node_ranks[node]),
            energy_j_by_domain=joules,
            pue=float(first["pue"]),
            carbon_intensity_g_per_kwh=_float_or_none(first.get("g_per_kwh")),
            country=first.get("country"),
            region=first.get("region"),
            footprint=_footprint(first),
            duration_s=float(first.get("duration_s") or 0.0),
        )
    missing = sorted(r for r in range(world_size) if not reports.get(r, {}).get("final"))
    return JobEnergy(
        world_size=world_size,
        nodes=result,
        missing_ranks=missing,
        own_run_ranks=own,
        reports=[reports[r] for r in sorted(reports)],
    )


def _footprint(contrib: Contribution) -> Footprint:
    """A rank's footprint settings (none from a rank of an older version)."""
    try:
        return Footprint.from_dict(contrib.get("footprint"))
    except (TypeError, ValueError) as exc:  # checked on that rank: only a damaged store
        return Footprint(refused=f"rank {contrib.get('rank')}'s settings are unreadable: {exc}")


def _float_or_none(value: Any) -> float | None:
    # A rank whose carbon intensity is unknown sends null.
    return None if value is None else float(value)
