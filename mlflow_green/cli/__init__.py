"""The ``mlflow-green`` command: the click group, and which module holds each subcommand.

``measure`` (countries), ``runs`` (sync), ``registry`` (budget, gate, promote),
``rank``, ``report``, ``estimate``, ``card`` and ``doctor``. The subcommand modules only
define commands (they never import this one); each imports what it needs when it runs, so
that ``mlflow-green --help`` stays fast.
"""

from __future__ import annotations

import click

from mlflow_green._version import __version__
from mlflow_green.cli.card import card
from mlflow_green.cli.doctor import doctor
from mlflow_green.cli.estimate import estimate
from mlflow_green.cli.measure import countries
from mlflow_green.cli.rank import rank
from mlflow_green.cli.registry import budget, gate, promote
from mlflow_green.cli.report import report
from mlflow_green.cli.runs import sync


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mlflow-green")
def main() -> None:
    """Energy and carbon of machine learning in MLflow."""


for _command in (countries, sync, rank, report, budget, gate, promote, estimate, card, doctor):
    main.add_command(_command)
