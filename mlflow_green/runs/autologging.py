"""``autolog()``: switching run measurement on, reconfiguring it, and off again.

Turning it on builds the settings (refused at the call when bad), installs the
hooks on MLflow (:mod:`~mlflow_green.runs.hooks`) and the SIGTERM handler
(:mod:`~mlflow_green.runs.signals`), and joins a distributed job; turning it
off undoes all of that. Zero-code mode enters through :func:`autolog_from_env`.
"""

from __future__ import annotations

import warnings

from mlflow_green import distributed
from mlflow_green.measure.config import AutologConfig, resolve_disable
from mlflow_green.runs import _trampoline, hooks, signals, tracked
from mlflow_green.runs.tracked import WARNING_PREFIX, warn_current


def autolog(
    country: str | None = None,
    carbon_intensity: float | None = None,
    pue: float | None = None,
    scope: str | None = None,
    sample_interval_s: float | None = None,
    flush_interval_s: float | None = None,
    log_artifacts: bool | None = None,
    disable: bool | None = None,
    silent: bool | None = None,
    *,
    region: str | None = None,
    cloud_provider: str | None = None,
    cloud_region: str | None = None,
    price_per_kwh: float | None = None,
    currency: str | None = None,
    wue_l_per_kwh: float | None = None,
    electricity_water_l_per_kwh: float | None = None,
    embodied_co2eq_kg: float | None = None,
    lifetime_years: float | None = None,
    reserved_share: float | None = None,
) -> None:
    """Record the energy and emissions of every MLflow run from now on.

    Args:
        country: ISO 3166-1 alpha-3 code of the grid (e.g. ``"FRA"``); refine with
            ``region=`` (US state, Canadian province, ...), or give
            ``cloud_provider=``/``cloud_region=`` instead.
        carbon_intensity: gCO2eq/kWh; overrides the location's value.
        pue: data-centre power usage effectiveness, >= 1.
        scope: ``"machine"`` (default) or ``"process"`` (CPU/RAM scaled to this process tree).
        sample_interval_s: power timeline resolution in seconds.
        flush_interval_s: cumulative energy and emissions are written to the run this often.
        log_artifacts: write ``green/report.json``, ``timeline.csv`` and ``power.png``.
        disable: remove every hook; runs already measured stop being measured.
        silent: no warnings from mlflow-green (they go to the debug log).
        price_per_kwh: electricity price per kWh (0 to 1e6): metric ``green/cost``, the
            run's kWh (PUE included) x this; ``currency``: its ISO 4217 code (tag
            ``green.currency``; needs a price).
        wue_l_per_kwh: on-site water usage effectiveness, litres per kWh of device energy
            (0 to 20): metric ``green/water_l``; ``electricity_water_l_per_kwh`` (0 to 100,
            needs a WUE) adds the water consumed to generate each kWh drawn.
        embodied_co2eq_kg: the machine's manufacturing emissions (0 to 1e6 kg), with its
            ``lifetime_years`` (0.1 to 30; each needs the other) and the ``reserved_share``
            of the machine a run uses ((0, 1], default 1): metric
            ``green/embodied_co2eq_kg``, its share for the run's duration.

    Every argument also reads ``MLFLOW_GREEN_<NAME>`` when not given. Calling
    ``autolog`` again reconfigures. Invalid values raise ``ValueError`` here.

    A resumed run (``mlflow.start_run(run_id=...)``, ``MlflowClient().update_run(id,
    "RUNNING")``) is measured from the resume; its totals add the earlier sessions'.
    """
    _trampoline.settle()  # the program's own choice: MLFLOW_GREEN_AUTOLOG no longer applies
    if resolve_disable(disable):
        turn_off()
        return
    _enable(
        AutologConfig.build(
            country=country,
            region=region,
            cloud_provider=cloud_provider,
            cloud_region=cloud_region,
            carbon_intensity=carbon_intensity,
            pue=pue,
            scope=scope,
            sample_interval_s=sample_interval_s,
            flush_interval_s=flush_interval_s,
            log_artifacts=log_artifacts,
            silent=silent,
            price_per_kwh=price_per_kwh,
            currency=currency,
            wue_l_per_kwh=wue_l_per_kwh,
            electricity_water_l_per_kwh=electricity_water_l_per_kwh,
            embodied_co2eq_kg=embodied_co2eq_kg,
            lifetime_years=lifetime_years,
            reserved_share=reserved_share,
        )
    )


def autolog_from_env() -> None:
    """Zero-code mode (``MLFLOW_GREEN_AUTOLOG=true``): ``autolog()`` from the environment alone.

    Energy does not depend on the location: a location setting that is not valid
    leaves the carbon intensity unknown (CO2eq is not logged; the run's
    ``green.carbon_intensity_source`` tag says why) instead of measuring nothing; a bad
    footprint setting likewise leaves cost, water and embodied emissions unlogged.
    Any other bad setting raises, and the plugin turns that into one warning.
    """
    if is_enabled():  # an explicit autolog() call keeps its own arguments
        return
    config = AutologConfig.build(unknown_location_ok=True)
    _enable(config)
    state = tracked.current()
    if config.warnings and state is not None:
        state.warn("; ".join(config.warnings))


def is_enabled() -> bool:
    """Whether ``autolog`` hooks are installed."""
    return tracked.current() is not None


def turn_off() -> None:
    """Remove every hook; runs being measured stop being measured (nothing more is logged)."""
    hooks.uninstall()
    state = tracked.set_current(None)
    distributed.stop()
    if state is not None:
        with state.lock:
            runs, state.runs = list(state.runs.values()), {}
        for run in runs:
            run.window.close()
        state.wake.set()
    signals.uninstall_sigterm()
    _set_silent(False)


def _enable(config: AutologConfig) -> None:
    _set_silent(config.silent)
    state = tracked.current()
    if state is None:
        state = tracked.State(config)
        tracked.set_current(state)
        try:
            hooks.install()
            signals.install_sigterm()
        except Exception as exc:  # an MLflow whose internals moved: measure nothing, say so
            turn_off()
            state.warn(f"autolog could not hook into MLflow ({exc!r}); runs are not measured")
    else:
        state.config = config  # runs already open keep measuring, with the new settings
        state.wake.set()
    _join_job()


def _join_job() -> None:
    # Every rank of a torchrun/srun job follows rank 0's runs (a no-op when single-process).
    if tracked.current() is None:
        return
    try:
        distributed.start(_current_config, warn_current)
    except Exception as exc:
        warn_current(f"could not join the distributed job ({exc!r}); this rank measures alone")


def _current_config() -> AutologConfig | None:
    state = tracked.current()
    return state.config if state is not None else None


def _set_silent(silent: bool) -> None:
    # The monitor and meters warn directly (from any thread): silence them by message.
    if silent:
        warnings.filterwarnings("ignore", message=WARNING_PREFIX)
        return
    kept = [
        f
        for f in warnings.filters
        if not (f[0] == "ignore" and getattr(f[1], "pattern", None) == WARNING_PREFIX)
    ]
    if len(kept) != len(warnings.filters):
        warnings.filters[:] = kept
        mutated = getattr(warnings, "_filters_mutated", None)  # drops cached decisions
        if callable(mutated):
            mutated()
