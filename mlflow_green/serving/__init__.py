"""Metering a served model: requests, predictions, tokens and the host's energy, per serving run.

A model served by MLflow's scoring server (``mlflow models serve``) under zero-code
mode (``MLFLOW_GREEN_AUTOLOG=true``) meters itself. ``hook`` patches the scoring
server (the ``runs.plugin`` installs it when the server's module is imported);
``counting`` turns each answered request into counts (rows, tokens); ``shared``
holds what the workers of one host share (the host-meter lock, each worker's
counts, the session's state); ``host`` is the one meter per host that measures
the machine and writes the *serving run* (``servingrun``) and feeds the
Prometheus exporter (``prometheus``); ``settings`` reads the environment.
"""
