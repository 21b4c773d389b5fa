"""Hourly carbon-intensity series: exact energy-weighted integrals, and bad files as errors.

Power timelines are scripted (what the monitor records: average watts over the interval
ending at each point), so every expected figure is exact. The expected integrals are
computed independently, second by second: every boundary below falls on a whole second.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path

import pytest

from mlflow_green.measure.carbon import UNKNOWN_SOURCE_PREFIX
from mlflow_green.measure.intensity_series import (
    IntensitySeries,
    load_series,
    step_words,
    weighted_intensity,
)
from mlflow_green.measure.report import TimelinePoint

J_PER_KWH = 3.6e6
NOON = datetime(2024, 3, 1, 12, tzinfo=timezone.utc).timestamp()
MIX = "codecarbon energy mix"


def write(tmp_path: Path, text: str, name: str = "grid.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def two_hours(tmp_path: Path) -> IntensitySeries:
    """12:00-13:00 UTC at 100 g/kWh, 13:00-14:00 at 400."""
    return load_series(
        write(tmp_path, "timestamp,g_per_kwh\n2024-03-01T12:00:00Z,100\n2024-03-01T13:00:00Z,400\n")
    )


def per_second(start_s: float, timeline: list, intensity) -> tuple[float, float]:
    """``(joules, joules x g/kWh)`` summed second by second (independent of the code)."""
    energy = weighted = 0.0
    prev = 0
    for t_s, power in timeline:
        for s in range(prev, int(t_s)):
            joules = sum(power.values())
            energy += joules
            weighted += joules * intensity(start_s + s)
        prev = int(t_s)
    return energy, weighted


def test_a_run_across_two_hours_gets_the_exact_integral_not_the_average(tmp_path) -> None:
    series = two_hours(tmp_path)
    # 12:25 to 13:55 on scripted power, a point every 10 minutes: the 12:55-13:05 interval
    # straddles the hour and is split at 13:00.
    start = NOON + 25 * 60
    watts = [50.0, 80.0, 120.0, 200.0, 300.0, 250.0, 150.0, 100.0, 90.0]
    timeline = [(600.0 * (k + 1), {"gpu": w, "cpu": 20.0}) for k, w in enumerate(watts)]

    g, source, share = weighted_intensity(series, start, timeline, 56.0, MIX)

    energy_j, weighted = per_second(start, timeline, lambda t: 100.0 if t < NOON + 3600 else 400.0)
    assert g == pytest.approx(weighted / energy_j, rel=1e-12)
    # Emissions from the one effective figure are the integral of power x intensity.
    energy_kwh = energy_j / J_PER_KWH
    assert energy_kwh * g / 1000 == pytest.approx(weighted / J_PER_KWH / 1000, rel=1e-12)
    assert (share, source) == (1.0, f"hourly series {series.source} (100% of the energy)")
    # Neither the plain average of the hours nor the time-weighted mean.
    assert abs(g - 250.0) > 10
    minutes_in_first_hour = 35
    time_weighted = (100.0 * minutes_in_first_hour + 400.0 * 55) / 90
    assert abs(g - time_weighted) > 10


def test_a_hand_checked_case_and_a_single_interval_split_at_the_hour(tmp_path) -> None:
    series = two_hours(tmp_path)
    # 100 W for 12:30-13:00 (100 g/kWh), 300 W for 13:00-13:30 (400 g/kWh).
    g, _, _ = weighted_intensity(
        series, NOON + 1800, [(1800.0, {"cpu": 100.0}), (3600.0, {"cpu": 300.0})], 56.0
    )
    assert g == pytest.approx((180_000 * 100 + 540_000 * 400) / 720_000, rel=1e-12) == 325.0
    # One point whose interval spans 12:30-13:30 at constant power: half in each hour.
    g, _, _ = weighted_intensity(series, NOON + 1800, [(3600.0, {"gpu": 250.0})], 56.0)
    assert g == pytest.approx(250.0, rel=1e-12)
    # A start off the whole second, boundaries still exact.
    g, _, _ = weighted_intensity(series, NOON + 1800.25, [(3600.0, {"gpu": 250.0})], 56.0)
    assert g == pytest.approx((1799.75 * 100 + 1800.25 * 400) / 3600, rel=1e-12)


def test_a_reports_timeline_points_are_accepted_as_they_are(tmp_path) -> None:
    series = two_hours(tmp_path)
    points = [TimelinePoint(1800.0, {"cpu": 100.0}), TimelinePoint(3600.0, {"cpu": 300.0})]
    assert weighted_intensity(series, NOON + 1800, points, 56.0)[0] == 325.0


def test_time_outside_the_series_uses_the_yearly_figure_and_says_which_share(tmp_path) -> None:
    series = two_hours(tmp_path)
    # 11:30-12:30 at 200 W: the first half is before the series.
    g, source, share = weighted_intensity(
        series, NOON - 1800, [(3600.0, {"gpu": 200.0})], 56.0, MIX
    )
    assert share == pytest.approx(0.5)
    assert g == pytest.approx((56.0 + 100.0) / 2, rel=1e-12)
    assert source == f"hourly series {series.source} (50% of the energy; the rest {MIX} 56 g/kWh)"
    # 13:30-15:00: a third inside, 400 g/kWh, the rest after the end.
    g, source, share = weighted_intensity(
        series, NOON + 5400, [(1800.0, {"gpu": 300.0}), (5400.0, {"gpu": 150.0})], 381.0, MIX
    )
    inside, outside = 300.0 * 1800, 150.0 * 3600
    assert share == pytest.approx(inside / (inside + outside))
    assert g == pytest.approx((inside * 400 + outside * 381) / (inside + outside), rel=1e-12)
    assert "(50% of the energy; the rest codecarbon energy mix 381 g/kWh)" in source


def test_a_run_the_series_does_not_cover_gets_the_labelled_yearly_figure(tmp_path) -> None:
    series = two_hours(tmp_path)
    g, source, share = weighted_intensity(
        series, NOON + 86400, [(60.0, {"gpu": 99.0})], 56.039, MIX
    )
    assert (g, share) == (56.039, 0.0)
    assert source == (
        f"{MIX} 56.04 g/kWh (100% of the energy: the hourly series {series.source} does not "
        "cover the run)"
    )


def test_an_unknown_fallback_leaves_a_partly_covered_run_unknown(tmp_path) -> None:
    series = two_hours(tmp_path)
    g, source, share = weighted_intensity(
        series, NOON - 600, [(1200.0, {"gpu": 1.0})], None, "unknown: country='FRN' is not known"
    )
    assert g is None and share == pytest.approx(0.5)
    assert source.startswith(UNKNOWN_SOURCE_PREFIX)
    assert "covers 50% of the energy" in source and "country='FRN' is not known" in source
    # Fully covered: the fallback is not needed, so it may be unknown.
    g, _, share = weighted_intensity(series, NOON, [(1200.0, {"gpu": 1.0})], None, "unknown: x")
    assert (g, share) == (100.0, 1.0)


def test_zero_energy_is_weighted_by_time_and_no_time_by_the_value_at_the_start(tmp_path) -> None:
    series = two_hours(tmp_path)
    zero = [(1800.0, {"gpu": 0.0}), (3600.0, {"gpu": 0.0})]
    g, source, share = weighted_intensity(series, NOON + 2700, zero, 56.0, MIX)
    assert g == pytest.approx((900 * 100 + 2700 * 400) / 3600, rel=1e-12) and share == 1.0
    assert source.endswith("(100% of the time, no energy measured)")
    g, source, share = weighted_intensity(series, NOON + 3700, [], 56.0, MIX)
    assert (g, share) == (400.0, 1.0) and "value at the run's start" in source
    g, source, share = weighted_intensity(series, NOON - 1, [], 56.0, MIX)
    assert (g, share) == (56.0, 0.0) and source.startswith(f"{MIX} 56 g/kWh")


def test_a_provider_hour_without_a_value_counts_as_not_covered() -> None:
    series = IntensitySeries("electricitymaps FR", (NOON, NOON + 3600), 3600.0, (100.0, math.nan))
    g, source, share = weighted_intensity(series, NOON + 1800, [(3600.0, {"gpu": 10.0})], 56.0, MIX)
    assert share == pytest.approx(0.5) and g == pytest.approx(78.0, rel=1e-12)
    assert source.startswith("hourly series electricitymaps FR (50% of the energy; the rest")


def test_electricity_maps_exports_offsets_and_naive_utc_read_alike(tmp_path) -> None:
    em = write(
        tmp_path,
        "\ufeffDatetime (UTC),Country,Zone id,Carbon intensity gCO₂eq/kWh (direct),"
        "Carbon intensity gCO₂eq/kWh (Life cycle),Data estimated\n"
        "2024-03-31 00:00:00,France,FR,12.5,30.02,false\n"
        "2024-03-31 01:00:00,France,FR,13.5,31.5,true\n"
        "\n"
        "2024-03-31 02:00:00,France,FR,14.5,33,false\n",
        "FR_2024_hourly.csv",
    )
    older = write(
        tmp_path,
        "Datetime (UTC),Carbon Intensity gCO₂eq/kWh (LCA)\n"
        "2024-03-31T00:00:00Z,30.02\n2024-03-31T01:00:00z,31.5\n2024-03-31T02:00:00.000Z,33\n",
        "older.csv",
    )
    # Paris across the change to summer time: local times jump, UTC steps are hourly.
    paris = write(
        tmp_path,
        "g_per_kwh,timestamp\n30.02,2024-03-31T01:00:00+01:00\n"
        "31.5,2024-03-31T03:00:00+02:00\n33,2024-03-31T04:00:00+02:00\n",
    )
    series = [load_series(p) for p in (em, older, paris)]
    midnight = datetime(2024, 3, 31, tzinfo=timezone.utc).timestamp()
    for s in series:
        assert s.start_s == (midnight, midnight + 3600, midnight + 7200)
        assert (s.step_s, s.g_per_kwh) == (3600.0, (30.02, 31.5, 33.0))
    assert series[0].source == str(em.resolve())
    assert series[0].description == f"hourly series {em.resolve()}"


def test_other_steps_are_named_in_words() -> None:
    assert [step_words(s) for s in (900, 3600, 7200, 86400, 90)] == [
        "15-minute",
        "hourly",
        "2-hour",
        "daily",
        "90-second",
    ]


# --- bad series: a ValueError at the call naming the file, the line, the value ----------------

HEADER = "timestamp,g_per_kwh\n"
ROWS = "2024-03-01T12:00:00Z,100\n2024-03-01T13:00:00Z,400\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ["the file is empty"]),
        (HEADER, ["has no rows"]),
        (HEADER + "2024-03-01T12:00:00Z,100\n", ["has one row", "line 2", "at least two"]),
        ("time,g_per_kwh\n" + ROWS, ["line 1", "no timestamp column", "'time'"]),
        ("timestamp,intensity\n" + ROWS, ["line 1", "no g_per_kwh column", "'intensity'"]),
        ("x\n" + ROWS, ["no timestamp and no g_per_kwh column"]),
        (HEADER + ROWS + "2024-03-01T14:00:00Z,abc\n", ["line 4", "g_per_kwh='abc'", "not a num"]),
        (HEADER + ROWS + "2024-03-01T14:00:00Z,\n", ["line 4", "g_per_kwh=''", "not a number"]),
        (HEADER + ROWS + "2024-03-01T14:00:00Z\n", ["line 4", "g_per_kwh=''", "not a number"]),
        (HEADER + ROWS + "2024-03-01T14:00:00Z,nan\n", ["line 4", "'nan'", "between 0 and 2000"]),
        (HEADER + ROWS + "2024-03-01T14:00:00Z,inf\n", ["line 4", "'inf'", "between 0 and 2000"]),
        (HEADER + ROWS + "2024-03-01T14:00:00Z,-1\n", ["line 4", "'-1'", "out of range"]),
        (HEADER + ROWS + "2024-03-01T14:00:00Z,2500\n", ["line 4", "'2500'", "out of range"]),
        (HEADER + ROWS + "yesterday,100\n", ["line 4", "timestamp='yesterday'", "not an ISO"]),
        (
            HEADER + "2024-03-01T13:00:00Z,100\n2024-03-01T12:00:00Z,400\n",
            ["line 3 (timestamp='2024-03-01T12:00:00Z') is earlier than line 2", "unsorted"],
        ),
        (
            HEADER + ROWS + "2024-03-01T13:00:00+00:00,400\n",
            ["line 4 (timestamp='2024-03-01T13:00:00+00:00') is the same time as line 3", "dup"],
        ),
        (
            HEADER + ROWS + "2024-03-01T15:00:00Z,400\n",
            ["line 4 (timestamp='2024-03-01T15:00:00Z') is 7200 s after line 3", "a gap", "3600"],
        ),
        (
            HEADER + ROWS + "2024-03-01T13:30:00Z,400\n2024-03-01T14:00:00Z,400\n",
            ["line 3 (timestamp='2024-03-01T13:00:00Z') is 3600 s after line 2", "1800 s", "irreg"],
        ),
        (
            HEADER + "2024-03-01 12:00:00,100\n2024-03-01T13:00:00Z,400\n",
            ["line 3", "'2024-03-01T13:00:00Z' has a UTC offset but line 2's", "mixed naive"],
        ),
    ],
)
def test_a_bad_series_is_an_error_naming_file_line_value_and_what_is_accepted(
    tmp_path, text: str, expected: list[str]
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ValueError) as info:
        load_series(path, "carbon_intensity")
    message = str(info.value)
    assert message.startswith(f"carbon_intensity={str(path)!r}: ")
    for part in expected:
        assert part in message
    assert "expected" in message.lower()  # and what is accepted


def test_a_missing_file_from_the_environment_names_the_variable(tmp_path) -> None:
    path = tmp_path / "nowhere.csv"
    with pytest.raises(ValueError) as info:
        load_series(path, "MLFLOW_GREEN_CARBON_INTENSITY")
    message = str(info.value)
    assert message.startswith(
        f"MLFLOW_GREEN_CARBON_INTENSITY={str(path)!r} is not a number, and no such file"
    )
    assert "electricitymaps:<ZONE>" in message and "0 to 2000" in message
    with pytest.raises(ValueError, match="cannot be read as a CSV file"):
        load_series(tmp_path, "carbon_intensity")  # a directory
