"""SCI = ((E x I) + M) per R (ISO/IEC 21031): the arithmetic, and unknown terms stay unknown."""

from __future__ import annotations

import pytest

from mlflow_green.measure.sci import PER_1K_QUERIES, PER_RUN, PER_TOKEN, sci


def test_per_run_is_emissions_plus_embodied_in_grams() -> None:
    # 2 kWh at 100 g/kWh = 0.2 kg, and 0.05 kg embodied: 250 g per run.
    score = sci(0.2, 0.05, 1, PER_RUN)
    assert (score.sci_g, score.operational_g, score.embodied_g) == pytest.approx((250, 200, 50))
    assert score.unit == "run" and score.method.startswith("(E x I + M) / R")


def test_per_1k_queries_and_per_token_divide_by_the_units() -> None:
    # 64 queries emitting 0.0032 kg with 0.0008 kg embodied: 4 g / 0.064 thousand = 62.5 g.
    per_1k = sci(0.0032, 0.0008, 64 / 1000, PER_1K_QUERIES)
    assert per_1k.sci_g == pytest.approx(62.5)
    per_token = sci(0.0032, 0.0008, 4000, PER_TOKEN)
    assert per_token.sci_g == pytest.approx(0.001)  # 4 g / 4,000 tokens


@pytest.mark.parametrize(
    ("co2eq_kg", "embodied_kg", "why"),
    [
        (None, 0.1, "the carbon intensity is unknown"),
        (0.1, None, "no embodied emissions given (embodied_co2eq_kg, lifetime_years)"),
    ],
)
def test_an_unknown_term_makes_the_sci_unknown_not_smaller(
    co2eq_kg: float | None, embodied_kg: float | None, why: str
) -> None:
    score = sci(co2eq_kg, embodied_kg, 1, PER_RUN)
    assert score.sci_g is None and why in score.method and score.method.startswith("unknown")
    known = score.operational_g if co2eq_kg is not None else score.embodied_g
    assert known == pytest.approx(100)  # the known term is still given
    assert score.to_dict()["sci_g"] is None


@pytest.mark.parametrize("units", [0, -1.0, float("nan")])
def test_units_must_be_positive(units: float) -> None:
    with pytest.raises(ValueError, match="expected a positive number of runs"):
        sci(0.1, 0.1, units, PER_RUN)
