"""Hugging Face model-card metadata (``co2_eq_emissions``) of a registered model version.

The figures come from the run whose energy counts for the version, found as the budget
gate finds it (:func:`mlflow_green.registry.lineage.evidence`, through the same
:class:`~mlflow_green.registry.lineage.ClientReader`; not simply the ``run_id`` the
version claims), and its ``green.*`` tags. The block follows the Hub's model-card
specification (huggingface.co/docs/hub/model-cards-co2)::

    co2_eq_emissions:
      emissions: 1234.5          # grams CO2eq: green/co2eq_kg x 1000
      source: mlflow-green 0.1.0 (MLflow run <run_id>; energy: cpu rapl, ...; ...)
      training_type: pre-training   # or fine-tuning
      geographical_location: France (FRA)
      hardware_used: Intel(R) Xeon(R) ...

A version whose run has no measured ``green/co2eq_kg`` (its carbon intensity was
unknown, it was not measured, or a logged value is not a measurement) gets no card:
:class:`EmissionsUnknown` says why; no number is made up. A location or hardware that
is unknown is left out of the block rather than filled in.

:func:`write_card` attaches a card to the version: the version tag
``green.co2_eq_emissions`` (the block, compact JSON) and the artifact
``green/model_card.md`` (the whole card, YAML header and text) of the run the figures
come from. ``huggingface_hub`` builds and renders the metadata; it never calls the Hub here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mlflow_green.registry.lineage import ClientReader, evidence
from mlflow_green.registry.rule import CO2EQ_METRIC, ENERGY_METRIC, _unknown_why, fmt

#: Model-version tag :func:`write_card` sets: the ``co2_eq_emissions`` block as compact JSON.
CARD_TAG = "green.co2_eq_emissions"
#: Run artifact :func:`write_card` logs: the model card (``README.md`` content).
CARD_ARTIFACT = "green/model_card.md"
#: The Hub's ``training_type`` values; ``pre-training`` is training from scratch.
TRAINING_TYPES = ("pre-training", "fine-tuning")
DEFAULT_TRAINING_TYPE = "pre-training"
#: Grams per kilogram: the Hub's ``emissions`` are grams, ``green/co2eq_kg`` kilograms.
G_PER_KG = 1000.0

_DOMAINS = ("gpu", "cpu", "ram")
_UNKNOWN = "unknown"
_UNKNOWN_INTENSITY = "unknown: "  # mlflow_green.measure.carbon.UNKNOWN_SOURCE_PREFIX


class EmissionsUnknown(Exception):
    """The version's emissions are not known, so no card is made; the message says why."""


@dataclass(frozen=True)
class EmissionsCard:
    """The ``co2_eq_emissions`` block of one model version and what it was made from."""

    model_name: str
    version: str
    run_id: str
    """The run whose energy counts for the version (the figures' run)."""
    co2eq_kg: float
    """The run's ``green/co2eq_kg`` (the largest value logged: the metric is cumulative)."""
    energy_kwh: float | None
    """The run's ``green/energy_kwh``; ``None`` when it is not a measurement."""
    co2_eq_emissions: dict[str, Any]
    """The Hub's block: ``emissions`` (grams), ``source``, ``training_type``, and
    ``geographical_location`` and ``hardware_used`` when the run says."""
    tags: dict[str, str]
    """The run's ``green.*`` tags."""

    def metadata(self) -> Any:
        """The block as ``huggingface_hub.ModelCardData``."""
        from huggingface_hub import ModelCardData

        return ModelCardData(co2_eq_emissions=dict(self.co2_eq_emissions))

    def to_yaml(self) -> str:
        """The model-card YAML metadata: ``co2_eq_emissions:`` and its fields."""
        return self.metadata().to_yaml()

    def to_json(self) -> str:
        """``{"co2_eq_emissions": {...}}``, indented."""
        return json.dumps({"co2_eq_emissions": self.co2_eq_emissions}, indent=2)

    def tag_value(self) -> str:
        """The block as compact JSON: the value of the version tag :data:`CARD_TAG`."""
        return json.dumps(self.co2_eq_emissions, separators=(",", ":"), ensure_ascii=False)

    def card_text(self) -> str:
        """A whole model card (``README.md``): the YAML header, then the figures in words.

        ``huggingface_hub.ModelCard(text)`` reads it back (it is built as one)."""
        from huggingface_hub import ModelCard

        content = f"---\n{self.to_yaml()}\n---\n\n{self._body()}"
        return str(ModelCard(content))

    def _body(self) -> str:
        block, tags = self.co2_eq_emissions, self.tags
        grams = block["emissions"]
        lines = [
            f"# {self.model_name} version {self.version}",
            "",
            "## Environmental impact",
            "",
            f"- **Emissions:** {fmt(grams)} g CO2eq ({fmt(self.co2eq_kg)} kg): the energy "
            "measured during the run times the grid's carbon intensity (embodied emissions "
            "of the hardware not included)",
        ]
        if self.energy_kwh is not None:
            pue = tags.get("green.pue")
            lines.append(
                f"- **Energy:** {fmt(self.energy_kwh)} kWh" + (f" (PUE {pue})" if pue else "")
            )
        intensity = tags.get("green.carbon_intensity_g_per_kwh")
        if intensity:
            source = tags.get("green.carbon_intensity_source")
            said = f" ({source})" if source else ""
            lines.append(f"- **Carbon intensity:** {intensity} gCO2eq/kWh{said}")
        lines.append(f"- **Training type:** {block['training_type']}")
        if "geographical_location" in block:
            lines.append(f"- **Location:** {block['geographical_location']}")
        if "hardware_used" in block:
            lines.append(f"- **Hardware:** {block['hardware_used']}")
        if tags.get("green.partial"):
            lines.append(f"- **Partial:** {tags['green.partial']}")
        lines.append(f"- **Source:** {block['source']}")
        return "\n".join(lines) + "\n"


def check_training_type(value: Any, source: str = "training_type") -> str:
    """``value`` if it is one of the Hub's :data:`TRAINING_TYPES`; ``ValueError`` naming
    ``source``, the value and the accepted ones otherwise."""
    if value not in TRAINING_TYPES:
        accepted = " or ".join(repr(t) for t in TRAINING_TYPES)
        raise ValueError(
            f"{source}={value!r}: expected {accepted} (the Hugging Face model card's "
            "training_type; pre-training is training from scratch)"
        )
    return value


def _client(client: Any = None) -> Any:
    if client is not None:
        return client
    from mlflow import MlflowClient

    return MlflowClient()


def emissions_card(
    model_name: str,
    version: str | int,
    *,
    training_type: str = DEFAULT_TRAINING_TYPE,
    client: Any = None,
) -> EmissionsCard:
    """The ``co2_eq_emissions`` block of version ``version`` of ``model_name``.

    Raises ``ValueError`` for a ``training_type`` the Hub does not know (before any
    read), MLflow's ``MlflowException`` for an unknown model or version, and
    :class:`EmissionsUnknown` (why) when the run whose energy counts for the version
    cannot be trusted or has no measured ``green/co2eq_kg``.
    """
    check_training_type(training_type)
    c = _client(client)
    c.get_registered_model(model_name)  # MLflow's own error for an unknown model
    mv = c.get_model_version(model_name, str(version))
    version = str(mv.version)
    head = f"model '{model_name}' version {version}"
    found = evidence(ClientReader(c), model_name, version)
    why = _unknown_why(CO2EQ_METRIC, found.run_id, found.metrics, found.why)
    tags: dict[str, str] = {}
    if found.run_id is not None and found.metrics is not None:
        run_tags = c.get_run(found.run_id).data.tags
        tags = {k: v for k, v in run_tags.items() if k.startswith("green.")}
    if why is not None or found.run_id is None or found.metrics is None:
        intensity = tags.get("green.carbon_intensity_source", "")
        missing = found.metrics is not None and CO2EQ_METRIC not in found.metrics
        if missing and intensity.startswith(_UNKNOWN_INTENSITY):
            unknown = intensity[len(_UNKNOWN_INTENSITY) :]
            why = f"{why}: its carbon intensity was unknown ({unknown})"
        raise EmissionsUnknown(
            f"{head}: emissions unknown ({why}); mlflow-green makes no model card without a "
            f"measured {CO2EQ_METRIC}"
        )
    co2eq_kg = float(found.metrics[CO2EQ_METRIC])
    energy_why = _unknown_why(ENERGY_METRIC, found.run_id, found.metrics, found.why)
    energy_kwh = None if energy_why else float(found.metrics[ENERGY_METRIC])
    block: dict[str, Any] = {
        "emissions": co2eq_kg * G_PER_KG,
        "source": _source(found.run_id, tags),
        "training_type": training_type,
    }
    location = _location(tags)
    if location:
        block["geographical_location"] = location
    hardware = tags.get("green.hardware", "").strip()
    if hardware and hardware != _UNKNOWN:
        block["hardware_used"] = hardware
    return EmissionsCard(model_name, version, found.run_id, co2eq_kg, energy_kwh, block, tags)


def write_card(card: EmissionsCard, *, client: Any = None) -> None:
    """Attach ``card`` to its version: the artifact :data:`CARD_ARTIFACT` of its run (the
    whole card), then the version tag :data:`CARD_TAG` (the block, compact JSON). Either
    replaces what an earlier call wrote."""
    c = _client(client)
    c.log_text(card.run_id, card.card_text(), CARD_ARTIFACT)
    c.set_model_version_tag(card.model_name, card.version, CARD_TAG, card.tag_value())


def _source(run_id: str, tags: dict[str, str]) -> str:
    """``mlflow-green <version> (MLflow run <id>; energy: <meters>; carbon intensity: ...)``."""
    version = tags.get("green.version", "").strip()
    parts = [f"MLflow run {run_id}"]
    meters = [
        f"{d} {tags[f'green.{d}_meter']}"
        for d in _DOMAINS
        if tags.get(f"green.{d}_meter", "none") not in ("none", "")
    ]
    if meters:
        parts.append("energy: " + ", ".join(meters))
    intensity = tags.get("green.carbon_intensity_g_per_kwh")
    if intensity:
        where = tags.get("green.carbon_intensity_source")
        said = f", {where}" if where else ""
        parts.append(f"carbon intensity: {intensity} gCO2eq/kWh{said}")
    if tags.get("green.pue"):
        parts.append(f"PUE {tags['green.pue']}")
    if tags.get("green.partial"):
        parts.append("partial: energy since the run's creation only")
    name = f"mlflow-green {version}" if version else "mlflow-green"
    return f"{name} ({'; '.join(parts)})"


def _location(tags: dict[str, str]) -> str | None:
    """``France (FRA)``, ``california, United States (USA)``, ``gcp europe-west1, Belgium
    (BEL)``; ``None`` when the run has no location."""
    code = tags.get("green.country", "").strip()
    country = None
    if code and code != _UNKNOWN:
        country = f"{_country_name(code)} ({code})"
    within = tags.get("green.region", "").strip() or tags.get("green.cloud", "").replace(":", " ")
    parts = [p for p in (within.strip(), country) if p]
    return ", ".join(parts) or None


def _country_name(code: str) -> str:
    """The country name of an ISO alpha-3 ``code`` in CodeCarbon's data (the code if absent)."""
    from mlflow_green.measure.carbon import available_countries

    try:
        return available_countries().get(code.upper(), code)
    except (OSError, RuntimeError, ValueError):  # codecarbon's data missing: the code will do
        return code
