"""``mlflow-green card``: the Hugging Face ``co2_eq_emissions`` block of a model version.

Added to the ``mlflow-green`` group by :mod:`mlflow_green.cli`. The figures are those of
the run whose energy counts for the version, as ``gate`` finds it
(:mod:`mlflow_green.registry.card`). Prints the model-card YAML metadata (``--format
yaml``, the default), the same as JSON (``--format json``) or a whole ``README.md``
model card (``--format card``). ``--write`` also attaches it to the version: version tag
``green.co2_eq_emissions`` (compact JSON) and artifact ``green/model_card.md`` of that run.

Exit codes, as ``gate``: 0 printed (and written); 1 refused: the version's emissions are
unknown (no measured ``green/co2eq_kg``), and no number is made up; 2 error (unknown
model or version, missing or unusable store, server unreachable, bad arguments).
"""

from __future__ import annotations

import sys

import click

from mlflow_green.cli._common import EXIT_REFUSED, BadInput
from mlflow_green.cli.registry import (
    _TRACKING_URI,
    _check_name,
    _check_version,
    _connect,
    _plainly,
)

_FORMATS = ("yaml", "json", "card")
#: The Hub's values (mlflow_green.registry.card.TRAINING_TYPES), here without importing MLflow.
_TRAINING_TYPES = ("pre-training", "fine-tuning")


@click.command()
@click.argument("name")
@click.argument("version")
@click.option(
    "--training-type",
    type=click.Choice(_TRAINING_TYPES),
    default=_TRAINING_TYPES[0],
    show_default=True,
    help="The card's training_type: pre-training (training from scratch) or fine-tuning.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(_FORMATS),
    default="yaml",
    show_default=True,
    help="yaml: the metadata block; json: the same as JSON; card: a whole README.md.",
)
@click.option(
    "--write",
    is_flag=True,
    help="Also set the version tag green.co2_eq_emissions and log the card as the "
    "artifact green/model_card.md of the version's run.",
)
@_TRACKING_URI
def card(
    name: str,
    version: str,
    training_type: str,
    fmt: str,
    write: bool,
    tracking_uri: str | None,
) -> None:
    """Print the Hugging Face co2_eq_emissions block of version VERSION of model NAME.

    Exit 0 printed, 1 emissions unknown (no card is made), 2 on error.
    """
    _check_name(name)
    version = _check_version(version)
    client, where = _connect(tracking_uri)
    from mlflow_green.registry.card import (
        CARD_ARTIFACT,
        CARD_TAG,
        EmissionsUnknown,
        emissions_card,
        write_card,
    )

    with _plainly(client, where, name, version):
        try:
            found = emissions_card(name, version, training_type=training_type, client=client)
        except EmissionsUnknown as exc:
            click.echo(f"REFUSED: {exc}", err=True)
            sys.exit(EXIT_REFUSED)
    try:
        text = {"yaml": found.to_yaml, "json": found.to_json, "card": found.card_text}[fmt]()
    except ModuleNotFoundError as exc:  # huggingface_hub, a dependency, removed since
        raise BadInput(
            f"mlflow-green card needs the Python package {exc.name!r}, which is not installed "
            "(pip install huggingface_hub)"
        ) from None
    if write:
        try:
            write_card(found, client=client)
        except Exception as exc:
            message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            raise BadInput(
                f"could not attach the card to model '{name}' version {version} at {where} "
                f"(tag {CARD_TAG}, artifact {CARD_ARTIFACT} of run {found.run_id}): {message}"
            ) from None
    click.echo(text.rstrip("\n"))
    if write:
        click.echo(
            f"wrote tag {CARD_TAG} on model '{name}' version {version} and artifact "
            f"{CARD_ARTIFACT} of run {found.run_id}",
            err=True,
        )
