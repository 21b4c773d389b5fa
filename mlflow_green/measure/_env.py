"""Parsing ``MLFLOW_GREEN_*`` values and arguments: boolean words and bounded numbers.

The zero-code plugin reads ``MLFLOW_GREEN_AUTOLOG`` while ``import mlflow`` runs,
so this module imports nothing but the standard library.

Every error is a ``ValueError`` that starts with ``<label>=<value>``, where the
label is the argument (``pue``) or, for a value read from the environment, the
variable (``MLFLOW_GREEN_PUE``), and says what is accepted.
"""

from __future__ import annotations

import math
import numbers
import os
import re
from collections.abc import Callable
from typing import Any

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_BOOL_WORDS = "true/false (or 1/0, yes/no, on/off)"

# A plain ASCII decimal: what float() accepts minus "1_0", non-ASCII digits, "nan", "inf".
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")

NumberParser = Callable[[Any, str], float]
"""``parse(value, label) -> float``; raises ``ValueError`` naming ``label``."""


def shown(value: Any) -> str:
    """``repr(value)`` cut to 80 characters, for error messages."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def env_name(name: str) -> str:
    """The environment variable that sets argument ``name``: ``MLFLOW_GREEN_<NAME>``."""
    return f"MLFLOW_GREEN_{name.upper()}"


def parse_bool(value: Any, name: str) -> bool:
    """A real ``bool``, or one of the words true/false, 1/0, yes/no, on/off (any case).

    Anything else (``"ture"``, ``""``, ``1``, ``b"true"``) raises ``ValueError``
    naming ``name`` and the value.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ValueError(f"{name}={shown(value)} is not a boolean: expected {_BOOL_WORDS}")


def env_bool(variable: str, default: bool = False) -> bool:
    """The boolean in environment ``variable``; ``default`` when it is unset or blank.

    Raises ``ValueError`` naming the variable when it holds anything but a boolean
    word (``MLFLOW_GREEN_AUTOLOG=ture``), so a caller can tell "off" from "not a boolean".
    """
    raw = os.environ.get(variable)
    if raw is None or raw.strip() == "":
        return default
    return parse_bool(raw, variable)


def bounded_number(low: float, high: float, what: str, note: str = "") -> NumberParser:
    """A parser of numbers from ``low`` to ``high`` inclusive.

    Accepted: ``int`` and ``float`` (any real number type, but not ``bool``), and
    strings holding a plain ASCII decimal (``"1.5"``, ``"2e-1"``). Refused, with a
    ``ValueError`` naming the label, the value, ``what`` is expected and the range:
    booleans, bytes, ``"1_0"``, non-ASCII digits (``"１２"``), NaN, infinities, and
    values outside the range. ``note`` (e.g. typical values) ends the range message.
    """
    expected = f"expected {what} between {low:g} and {high:g}{note}"

    def parse(value: Any, label: str) -> float:
        number: float | None = None
        try:
            if isinstance(value, numbers.Real) and not isinstance(value, bool):
                number = float(value)
            elif isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
                number = float(value.strip())
        except OverflowError:  # an int beyond float's range
            raise ValueError(f"{label}={shown(value)} is out of range: {expected}") from None
        if number is None:
            kind = "a boolean, not a number" if isinstance(value, bool) else "not a number"
            raise ValueError(
                f"{label}={shown(value)} is {kind}: {expected}, as a plain decimal like 1.5"
            )
        if not math.isfinite(number):
            raise ValueError(f"{label}={shown(value)} is not a finite number: {expected}")
        if not low <= number <= high:
            raise ValueError(f"{label}={shown(value)} is out of range: {expected}")
        return number

    return parse
