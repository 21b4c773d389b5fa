"""Measurements onto MLflow runs: autolog's hooks on MLflow, flushing, signals, the spool, phases.

``autologging`` switches it on and off; ``hooks`` are the patch points on MLflow;
``lifecycle`` opens and closes a run's measurement, ``flushing`` writes running
totals, ``signals`` handles SIGTERM and exit, ``tracked`` holds the runs being
measured. ``names`` maps a report onto the contract's metric and tag names and
``artifacts`` puts them on a run; the ``spool`` keeps what a silent server could
not take. ``phases`` measures parts of a run; ``plugin`` (with ``_trampoline``)
is the zero-code entry point.
"""
