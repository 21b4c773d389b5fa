"""``estimate()``: a planned job's energy, CO2eq and cost against published tables, and its errors.

Must-show 3 of issue 15: the six rows of Patterson et al. 2021 ("Carbon Emissions and Large
Neural Network Training", arXiv:2104.10350), Table 4, reproduced within 1% from the
published inputs. The accelerator table's look-ups, TDP x utilisation, cost, and every
kind of bad input (a ValueError naming the value, the argument and what is accepted).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

import mlflow_green
from mlflow_green.measure import accelerators, carbon
from mlflow_green.measure.planning import ARGUMENTS, JobEstimate, estimate, format_figure

# name, processors, days, average W per processor, PUE, kgCO2eq/kWh -> published MWh, tCO2eq
PATTERSON_TABLE_4 = [
    ("Evolved Transformer NAS", 200, 6.8, 208, 1.10, 0.431, 7.5, 3.2),
    ("T5", 512, 20, 310, 1.12, 0.545, 85.7, 46.7),
    ("Meena", 1024, 30, 289, 1.09, 0.415, 232, 96.4),
    ("GShard-600B", 1024, 3.1, 288, 1.09, 0.201, 24.1, 4.8),
    ("Switch Transformer", 1024, 27, 245, 1.10, 0.403, 179, 72.2),
    ("GPT-3", 10_000, 14.8, 330, 1.10, 0.429, 1287, 552.1),
]


@pytest.mark.parametrize(
    ("name", "processors", "days", "watts", "pue", "kg_per_kwh", "mwh", "tonnes"),
    PATTERSON_TABLE_4,
    ids=[row[0] for row in PATTERSON_TABLE_4],
)
def test_patterson_2021_table_4_within_one_percent(
    name: str,
    processors: int,
    days: float,
    watts: float,
    pue: float,
    kg_per_kwh: float,
    mwh: float,
    tonnes: float,
) -> None:
    """Computed from the published inputs, each published output is met within 1%.

    The largest gaps are GShard's energy (23.92 vs 24.1 MWh, -0.76%) and the Evolved
    Transformer's CO2eq (3.219 vs 3.2 t, +0.59%): the paper rounds to two or three
    significant digits. Every row is inside 1% as computed, so no rounding allowance is used.
    """
    found = estimate(
        accelerator_hours=processors * days * 24,
        power_w=watts,
        pue=pue,
        carbon_intensity=kg_per_kwh * 1000,  # g/kWh
    )
    assert found.energy_kwh / 1000 == pytest.approx(mwh, rel=0.01)
    assert found.co2eq_kg is not None
    assert found.co2eq_kg / 1000 == pytest.approx(tonnes, rel=0.01)
    assert found.intensity_source == "user-supplied"
    assert found.energy_method.startswith(f"{watts} W average per accelerator (given) x ")


def test_the_energy_method_reads_like_the_formula() -> None:
    found = estimate(count=200, hours=6.8 * 24, power_w=208, pue=1.1, carbon_intensity=431)
    assert found.accelerator_hours == pytest.approx(32_640)
    assert found.energy_method == (
        "208 W average per accelerator (given) x 32,640 accelerator-hours "
        "(200 accelerators x 163.2 h) x PUE 1.10"
    )
    assert found.co2eq_method == "7,468 kWh x 431 gCO2eq/kWh (given)"
    assert found.energy_kwh == pytest.approx(208 * 32_640 * 1.1 / 1000)
    assert (found.count, found.hours, found.power_basis, found.tdp_w) == (
        200,
        6.8 * 24,
        "given",
        None,
    )


# -- the accelerator table -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spelling", "name", "watts"),
    [
        ("H100-SXM", "NVIDIA H100 SXM", 700),
        ("nvidia h100 sxm", "NVIDIA H100 SXM", 700),
        ("NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM", 700),  # nvidia-smi's name for it
        ("h200", "NVIDIA H200 SXM", 700),  # nvidia-smi says 'NVIDIA H200'
        ("H100 PCIe", "NVIDIA H100 PCIe", 350),
        ("a100 sxm", "NVIDIA A100 SXM", 400),
        ("A100-SXM4-80GB", "NVIDIA A100 SXM", 400),
        ("A100 PCIe 40GB", "NVIDIA A100 PCIe 40GB", 250),
        ("Tesla V100-SXM2-32GB", "NVIDIA V100 SXM2", 300),
        ("v100 pcie", "NVIDIA V100 PCIe", 250),
        ("Tesla T4", "NVIDIA T4", 70),
        ("L4", "NVIDIA L4", 72),
        ("a10", "NVIDIA A10", 150),
        ("l40s", "NVIDIA L40S", 350),
        ("RTX 4090", "NVIDIA GeForce RTX 4090", 450),
        ("geforce rtx 3090", "NVIDIA GeForce RTX 3090", 350),
        ("mi300x", "AMD Instinct MI300X", 750),
        ("AMD MI250X", "AMD Instinct MI250X", 560),
        ("Instinct MI210", "AMD Instinct MI210", 300),
        ("tpu v4", "Google TPU v4", 192),
    ],
)
def test_names_match_case_and_vendor_insensitively(spelling: str, name: str, watts: float) -> None:
    found = accelerators.lookup(spelling)
    assert (found.name, found.power_w) == (name, watts)


def test_every_figure_has_a_source_and_a_basis() -> None:
    for acc in accelerators.ACCELERATORS:
        assert acc.power_w > 0 and acc.basis in ("TDP", "measured maximum"), acc
        assert "http" in acc.source, acc  # a document one can open
        if acc.basis != "TDP":
            assert "mean" in acc.note and "TDP" in acc.note, acc  # says it is not a TDP


def test_docs_list_every_accelerator_with_its_figure_and_source() -> None:
    """docs/estimate.md's table is the code's: a figure changed in one is changed in both."""
    docs = (Path(__file__).parents[2] / "docs" / "estimate.md").read_text()
    rows = [
        line for line in docs.splitlines() if line.startswith(("| NVIDIA", "| AMD", "| Google"))
    ]
    table = {row.split(" | ")[0][2:]: row.split(" | ") for row in rows}
    for acc in accelerators.ACCELERATORS:
        assert acc.name in table, acc.name
        assert table[acc.name][1] == f"{acc.power_w:g}" and acc.source in table[acc.name][4]
    assert set(table) == {acc.name for acc in accelerators.ACCELERATORS}  # no row left over


def test_a_family_name_with_boards_of_different_power_lists_them() -> None:
    with pytest.raises(ValueError, match="accelerator='h100'") as caught:
        estimate("h100", hours=1)
    message = str(caught.value)
    for board in ("NVIDIA H100 SXM (700 W)", "NVIDIA H100 PCIe (350 W)", "power_w"):
        assert board in message


def test_an_unknown_accelerator_gets_close_names_and_the_whole_list() -> None:
    with pytest.raises(ValueError) as caught:
        estimate("A100 SMX", hours=1)
    message = str(caught.value)
    assert message.startswith("accelerator='A100 SMX' is not an accelerator")
    assert "Did you mean 'NVIDIA A100 SXM'" in message
    assert all(name in message for name in accelerators.names())
    with pytest.raises(ValueError, match="Did you mean 'AMD Instinct MI300X'"):
        estimate("mi300", hours=1)


def test_tdp_times_utilisation() -> None:
    full = estimate("h100 sxm", count=8, hours=10)
    assert (full.power_w, full.tdp_w, full.utilisation, full.power_basis) == (700, 700, 1.0, "TDP")
    assert full.energy_kwh == pytest.approx(700 * 80 / 1000)
    assert "x utilisation 1.0 (assumed: the full figure" in full.energy_method
    assert "NVIDIA H100 SXM" in full.energy_method and "nvidia.com" in full.energy_method
    part = estimate("h100 sxm", count=8, hours=10, utilisation=0.6, pue=1.2)
    assert part.power_w == pytest.approx(420)
    assert part.energy_kwh == pytest.approx(420 * 80 * 1.2 / 1000)
    assert "x utilisation 0.6 (given) x 80 accelerator-hours (8 accelerators x 10 h)" in (
        part.energy_method
    )
    assert part.energy_method.endswith("x PUE 1.20")


def test_power_w_wins_and_the_accelerator_is_a_label() -> None:
    found = estimate("a100 sxm", accelerator_hours=100, power_w=250)
    assert (found.accelerator, found.power_w, found.tdp_w) == ("NVIDIA A100 SXM", 250, None)
    custom = estimate("my lab's FPGA", accelerator_hours=100, power_w=40)
    assert custom.accelerator == "my lab's FPGA" and custom.energy_kwh == pytest.approx(4)


# -- carbon and cost ---------------------------------------------------------------------------


def test_location_uses_carbon_py_and_no_location_is_the_world_average() -> None:
    fra = estimate(power_w=1000, hours=1, country="fra")
    assert fra.g_per_kwh == carbon.resolve_intensity(country="FRA").g_per_kwh
    assert (fra.country, fra.intensity_source) == ("FRA", "codecarbon energy mix")
    assert fra.co2eq_kg == pytest.approx(fra.g_per_kwh / 1000)
    assert "France (FRA), codecarbon energy mix" in fra.co2eq_method
    world = estimate(power_w=1000, hours=1)
    assert world.g_per_kwh == carbon.resolve_intensity().g_per_kwh
    assert "world average" in world.co2eq_method and world.country is None
    given = estimate(power_w=1000, hours=1, country="DEU", carbon_intensity=20)
    assert (given.g_per_kwh, given.country, given.intensity_source) == (20, "DEU", "user-supplied")


def test_cost_is_energy_times_price() -> None:
    found = estimate(power_w=500, count=4, hours=10, pue=1.5, price_per_kwh=0.25, currency="eur")
    assert found.energy_kwh == pytest.approx(30)
    assert (found.cost, found.currency) == (pytest.approx(7.5), "EUR")
    assert found.cost_method == "30 kWh x 0.25 EUR/kWh (given)"
    free = estimate(power_w=500, hours=1, price_per_kwh=0)
    assert free.cost == 0 and free.currency is None and "no currency" in free.cost_method
    none = estimate(power_w=500, hours=1)
    assert none.cost is None and none.cost_method == "no price_per_kwh given"


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fragments"),
    [
        ({"hours": -1}, ["hours=-1", "positive number of hours"]),
        ({"hours": 0}, ["hours=0 is out of range"]),
        ({"hours": math.nan}, ["hours=nan is not a finite number"]),
        ({"hours": math.inf}, ["hours=inf is not a finite number"]),
        ({"hours": "10"}, ["hours='10' is not a number"]),
        ({"accelerator_hours": -5}, ["accelerator_hours=-5", "accelerator-hours"]),
        ({"hours": 1, "count": 0}, ["count=0", "whole number of 1 or more"]),
        ({"hours": 1, "count": 2.5}, ["count=2.5", "whole number"]),
        ({"hours": 1, "count": True}, ["count=True"]),
        (
            {"hours": 1, "utilisation": 0},
            ["utilisation=0 is out of range", "above 0 and at most 1"],
        ),
        ({"hours": 1, "utilisation": 1.5}, ["utilisation=1.5", "at most 1"]),
        ({"hours": 1, "utilisation": 70}, ["utilisation=70", "0.7 for 70%"]),
        ({"hours": 1, "pue": 0.9}, ["pue=0.9", "between 1 and 3"]),
        ({"hours": 1, "price_per_kwh": -0.1}, ["price_per_kwh=-0.1", "0 or more"]),
        ({"hours": 1, "price_per_kwh": 1, "currency": "EURO"}, ["currency='EURO'", "3 letters"]),
        ({"hours": 1, "price_per_kwh": 1, "currency": "E1R"}, ["currency='E1R'", "ISO 4217"]),
        ({"hours": 1, "currency": "EUR"}, ["currency='EUR' without price_per_kwh"]),
        ({"hours": 1, "country": "FRN"}, ["country='FRN'", "Did you mean FRA (France)"]),
        ({"hours": 1, "carbon_intensity": 5000}, ["carbon_intensity=5000", "0 and 2000"]),
        ({}, ["give hours (with count", "or accelerator_hours"]),
        ({"hours": 1, "accelerator_hours": 2}, ["not both"]),
        ({"accelerator_hours": 10, "count": 4}, ["count=4 with accelerator_hours"]),
    ],
)
def test_bad_input_names_the_value_the_argument_and_what_is_accepted(
    kwargs: dict, fragments: list[str]
) -> None:
    with pytest.raises(ValueError) as caught:
        estimate("t4", **kwargs)
    for fragment in fragments:
        assert fragment in str(caught.value), (fragment, str(caught.value))


def test_power_needs_an_accelerator_or_power_w_and_not_utilisation_beside_power_w() -> None:
    with pytest.raises(ValueError, match=r"give accelerator=<name> .* or power_w="):
        estimate(hours=1)
    with pytest.raises(ValueError, match=r"utilisation=0\.5 with power_w=300"):
        estimate(hours=1, power_w=300, utilisation=0.5)
    with pytest.raises(ValueError, match=r"power_w=-3 is out of range"):
        estimate(hours=1, power_w=-3)
    with pytest.raises(ValueError, match=r"power_w=700000 is out of range: .*at most 10,000"):
        estimate(hours=1, power_w=700_000)  # milliwatts


def test_the_country_hint_names_this_functions_argument_not_autologs_variable() -> None:
    with pytest.raises(ValueError) as caught:
        estimate("t4", hours=1, country="XYZ")
    assert "carbon_intensity=<g/kWh>" in str(caught.value)
    assert "MLFLOW_GREEN_" not in str(caught.value)


# -- the result ----------------------------------------------------------------------------------


def test_the_result_is_frozen_public_and_json_ready() -> None:
    import json

    found = mlflow_green.estimate("l4", hours=2, country="USA")
    assert isinstance(found, mlflow_green.JobEstimate) and type(found) is JobEstimate
    with pytest.raises(dataclasses.FrozenInstanceError):
        found.energy_kwh = 0  # type: ignore[misc]
    data = json.loads(json.dumps(found.to_dict()))
    assert data["energy_kwh"] == pytest.approx(0.144) and data["accelerator"] == "NVIDIA L4"
    assert list(ARGUMENTS) == [
        p for p in estimate.__code__.co_varnames[: estimate.__code__.co_argcount]
    ]


@pytest.mark.parametrize(
    ("value", "text"),
    [(32_640.0, "32,640"), (7468.032, "7,468"), (85.3279, "85.33"), (0.0012346, "0.001235"),
     (1_289_376.0, "1,289,376"), (0.0, "0")],
)  # fmt: skip
def test_figures_in_methods(value: float, text: str) -> None:
    assert format_figure(value) == text
