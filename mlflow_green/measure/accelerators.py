"""Power figures of common accelerators (W per device), each with its source, and name look-up.

For planning a job (:func:`mlflow_green.measure.planning.estimate`), not for measuring
one: a running job is metered by its counters. Each figure is the vendor's
maximum board power (TDP, "total graphics power", "max power consumption") as its
datasheet or product page states it, unless :attr:`Accelerator.basis` says
otherwise: Google publishes no TDP for its TPUs, only measured power (minimum,
mean, maximum), and the maximum is given here, the mean in the note. Average
power under a real training load is lower than the TDP; :func:`estimate` scales
the TDP by a utilisation, or takes a measured average (``power_w``) instead.

Names are matched case-insensitively after dropping vendor words (NVIDIA, AMD,
Google, Tesla, GeForce, Instinct) and every character that is not a letter or a
digit: ``"h100 sxm"``, ``"H100-SXM"``, ``"nvidia h100 sxm"`` and nvidia-smi's
``"NVIDIA H100 80GB HBM3"`` all name the H100 SXM. A family name shared by several
boards of different power (``"H100"``, ``"A100"``, ``"V100"``) is ambiguous: the
error lists the boards, so that a 350 W card is never planned as a 700 W one.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Accelerator:
    """One accelerator's power figure and where it comes from."""

    name: str
    """Display name, e.g. ``"NVIDIA H100 SXM"``."""
    power_w: float
    """Watts per device: the board's maximum power unless :attr:`basis` says otherwise."""
    basis: str
    """What :attr:`power_w` is: ``"TDP"`` (the vendor's maximum board power) or
    ``"measured maximum"`` (Google's TPUs)."""
    source: str
    """The document the figure is taken from: title and URL."""
    note: str = ""
    """Anything a planner should know (other variants, a typical or mean power)."""
    aliases: tuple[str, ...] = ()
    """Other spellings, e.g. the name nvidia-smi reports."""


_NVIDIA_H200 = (
    "NVIDIA H200 Tensor Core GPU product page, https://www.nvidia.com/en-us/data-center/h200/"
)
_NVIDIA_H100 = (
    "NVIDIA H100 Tensor Core GPU product page, https://www.nvidia.com/en-us/data-center/h100/"
)
_NVIDIA_A100 = (
    "NVIDIA A100 Tensor Core GPU datasheet, https://www.nvidia.com/content/dam/en-zz/Solutions/"
    "Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf"
)
_NVIDIA_V100 = (
    "NVIDIA Tesla V100 GPU datasheet, https://images.nvidia.com/content/technologies/volta/pdf/"
    "tesla-volta-v100-datasheet-letter-fnl-web.pdf"
)

#: The table, in the order ``mlflow-green estimate --list-accelerators`` prints it.
ACCELERATORS: tuple[Accelerator, ...] = (
    Accelerator(
        "NVIDIA H200 SXM",
        700.0,
        "TDP",
        _NVIDIA_H200,
        "configurable up to 700 W; nvidia-smi names it 'NVIDIA H200'",
        ("H200 SXM5", "H200"),
    ),
    Accelerator("NVIDIA H200 NVL", 600.0, "TDP", _NVIDIA_H200, "PCIe card, configurable 450-600 W"),
    Accelerator(
        "NVIDIA H100 SXM",
        700.0,
        "TDP",
        _NVIDIA_H100,
        "configurable up to 700 W; nvidia-smi names it 'NVIDIA H100 80GB HBM3'",
        ("H100 SXM5", "H100 80GB HBM3"),
    ),
    Accelerator(
        "NVIDIA H100 PCIe",
        350.0,
        "TDP",
        "NVIDIA H100 PCIe GPU product brief PB-11133-001_v02, November 2022 (maximum TDP "
        "350 W); " + _NVIDIA_H100,
        "configurable 300-350 W",
    ),
    Accelerator("NVIDIA H100 NVL", 400.0, "TDP", _NVIDIA_H100, "configurable 350-400 W"),
    Accelerator(
        "NVIDIA A100 SXM",
        400.0,
        "TDP",
        _NVIDIA_A100,
        "40 GB and 80 GB SXM4 modules alike",
        ("A100 SXM4", "A100 SXM4 40GB", "A100 SXM4 80GB", "A100 80GB SXM", "A100 40GB SXM"),
    ),
    Accelerator(
        "NVIDIA A100 PCIe 80GB",
        300.0,
        "TDP",
        _NVIDIA_A100,
        aliases=("A100 80GB PCIe", "A100 PCIE 80GB"),
    ),
    Accelerator(
        "NVIDIA A100 PCIe 40GB",
        250.0,
        "TDP",
        _NVIDIA_A100,
        aliases=("A100 40GB PCIe", "A100 PCIE 40GB"),
    ),
    Accelerator(
        "NVIDIA V100 SXM2",
        300.0,
        "TDP",
        _NVIDIA_V100,
        "16 GB and 32 GB modules alike",
        ("V100 SXM2 16GB", "V100 SXM2 32GB", "V100 SXM"),
    ),
    Accelerator(
        "NVIDIA V100 PCIe",
        250.0,
        "TDP",
        _NVIDIA_V100,
        "16 GB and 32 GB cards alike",
        ("V100 PCIE 16GB", "V100 PCIE 32GB"),
    ),
    Accelerator(
        "NVIDIA T4",
        70.0,
        "TDP",
        "NVIDIA T4 Tensor Core GPU datasheet, https://www.nvidia.com/content/dam/en-zz/Solutions/"
        "Data-Center/tesla-t4/t4-tensor-core-datasheet-951643.pdf",
    ),
    Accelerator(
        "NVIDIA L4",
        72.0,
        "TDP",
        "NVIDIA L4 Tensor Core GPU product page, https://www.nvidia.com/en-us/data-center/l4/",
    ),
    Accelerator(
        "NVIDIA A10",
        150.0,
        "TDP",
        "NVIDIA A10 Tensor Core GPU product page, "
        "https://www.nvidia.com/en-us/data-center/products/a10-gpu/",
    ),
    Accelerator(
        "NVIDIA L40S",
        350.0,
        "TDP",
        "NVIDIA L40S GPU product page, https://www.nvidia.com/en-us/data-center/l40s/",
    ),
    Accelerator(
        "NVIDIA GeForce RTX 4090",
        450.0,
        "TDP",
        "NVIDIA GeForce RTX 4090 specifications (total graphics power), "
        "https://www.nvidia.com/en-us/geforce/graphics-cards/40-series/rtx-4090/",
    ),
    Accelerator(
        "NVIDIA GeForce RTX 3090",
        350.0,
        "TDP",
        "NVIDIA GeForce RTX 3090 specifications (total graphics power), "
        "https://www.nvidia.com/en-us/geforce/graphics-cards/30-series/rtx-3090-3090ti/",
    ),
    Accelerator(
        "AMD Instinct MI300X",
        750.0,
        "TDP",
        "AMD Instinct MI300X accelerator specifications (total board power, peak), "
        "https://www.amd.com/en/products/accelerators/instinct/mi300/mi300x.html",
        "OAM module",
    ),
    Accelerator(
        "AMD Instinct MI250X",
        560.0,
        "TDP",
        "AMD Instinct MI250X accelerator specifications (typical board power 500 W, 560 W peak), "
        "https://www.amd.com/en/products/accelerators/instinct/mi200/mi250x.html",
        "560 W is the peak board power; typical board power 500 W",
    ),
    Accelerator(
        "AMD Instinct MI210",
        300.0,
        "TDP",
        "AMD Instinct MI210 accelerator specifications (typical board power), "
        "https://www.amd.com/en/products/accelerators/instinct/mi200/mi210.html",
        "PCIe card",
    ),
    Accelerator(
        "Google TPU v4",
        192.0,
        "measured maximum",
        "Google Cloud TPU v4 documentation, measured min/mean/max power 90/170/192 W per chip, "
        "https://cloud.google.com/tpu/docs/v4",
        "Google publishes no TDP; measured mean 170 W per chip (power_w=170 to plan with it)",
    ),
    Accelerator(
        "Google TPU v3",
        262.0,
        "measured maximum",
        "Google Cloud TPU v3 documentation, measured min/mean/max power 123/220/262 W per chip, "
        "https://cloud.google.com/tpu/docs/v3",
        "Google publishes no TDP; measured mean 220 W per chip (power_w=220 to plan with it)",
    ),
)

#: Words dropped before matching: vendors and product lines.
_NOISE = re.compile(r"\b(nvidia|amd|google|cloud|tesla|geforce|instinct|radeon)\b")


def normalise(name: str) -> str:
    """The key a name is matched by: lower case, no vendor words, only letters and digits."""
    return re.sub(r"[^0-9a-z]", "", _NOISE.sub(" ", name.lower()))


def _index() -> dict[str, Accelerator]:
    index: dict[str, Accelerator] = {}
    for acc in ACCELERATORS:
        for spelling in (acc.name, *acc.aliases):
            key = normalise(spelling)
            if index.setdefault(key, acc) is not acc:  # a table bug, caught by the tests
                raise RuntimeError(f"{spelling!r} names two accelerators")
    return index


_INDEX = _index()


def names() -> list[str]:
    """Every accelerator's display name, in table order."""
    return [acc.name for acc in ACCELERATORS]


def lookup(name: str, label: str = "accelerator", power_label: str = "power_w") -> Accelerator:
    """The accelerator ``name`` names (see the module's matching rules).

    Raises ``ValueError`` starting ``<label>=<name>`` for an unknown or ambiguous name:
    the boards a family name covers, else the close names (difflib), and every
    accepted name.
    """
    if not isinstance(name, str):
        raise ValueError(f"{label}={name!r} is not a string: expected an accelerator name")
    key = normalise(name)
    found = _INDEX.get(key)
    if found is not None:
        return found
    accepted = "; ".join(names())
    family = [acc for acc in ACCELERATORS if key and normalise(acc.name).startswith(key)]
    if len(family) > 1:
        boards = ", ".join(f"{acc.name} ({acc.power_w:g} W)" for acc in family)
        raise ValueError(
            f"{label}={name!r} names several boards of different power: {boards}. Name one "
            f"of them, or give {power_label} (the average W per accelerator) instead."
        )
    if len(family) == 1:
        hint = f" Did you mean {family[0].name!r}?"
    else:
        keys = difflib.get_close_matches(key, list(_INDEX), n=3, cutoff=0.6)
        close = list(dict.fromkeys(_INDEX[k].name for k in keys))
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(
        f"{label}={name!r} is not an accelerator mlflow-green knows.{hint} Accepted (any "
        f"case, with or without the vendor's name): {accepted}. For another device, give "
        f"{power_label} (its average W) instead."
    )
