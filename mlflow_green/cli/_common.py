"""What the ``mlflow-green`` commands share: the exit codes and the bad-input error."""

from __future__ import annotations

import click

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_ERROR = 2


class BadInput(click.ClickException):
    """A message and exit code 2, like a usage error, without the usage line."""

    exit_code = EXIT_ERROR
