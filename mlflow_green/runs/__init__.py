"""Measurements onto MLflow runs: autolog's hooks on MLflow, flushing, signals, the spool, phases.

``plugin`` is the zero-code entry point; ``names`` maps a report onto the contract's
metric and tag names and ``artifacts`` writes the ``green/`` files.
"""
