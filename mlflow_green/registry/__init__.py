"""The model registry: energy budgets (client checks, the gated ``green+`` store) and ranking.

``rule`` is the budget decision and ``lineage`` which run's energy counts for a
version; ``budgets`` is the client API and ``store`` the gated server store (its
reads in ``_store_reader``); ``rank`` orders versions by quality per kWh with the
Pareto front (its reads in ``_search``); ``inference`` measures a model's
inference energy.
"""
