"""``python -m mlflow_green.cli``: the ``mlflow-green`` command without its console script."""

from mlflow_green.cli import main

main()
