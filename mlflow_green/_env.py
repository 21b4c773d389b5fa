"""Boolean words of the ``MLFLOW_GREEN_*`` variables, in a module light enough for the plugin.

The zero-code plugin reads ``MLFLOW_GREEN_AUTOLOG`` while ``import mlflow`` runs,
so this module imports nothing but the standard library.
"""

from __future__ import annotations

from typing import Any

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def parse_bool(value: Any, name: str) -> bool:
    """Parse a boolean argument or environment value, naming ``name`` on error."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{name}={value!r} is not a boolean: expected true/false (or 1/0, yes/no)")
