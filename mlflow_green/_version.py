"""The package version (setup.cfg reads it as ``mlflow_green._version.__version__``)."""

__version__ = "0.1.0"
