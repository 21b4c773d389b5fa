"""Measuring: hardware counters to joules to an ``EnergyReport``; nothing here imports MLflow.

``meters/`` talks to the hardware (one module per energy source), ``monitor`` samples
them in one background thread, ``carbon`` and ``config`` turn settings into factors,
``report`` holds the result and ``tracker`` measures a block of code (``track()``).
"""
