"""Engine values as JSON response fields: NaN, inf and missing become ``null``.

JSON has no NaN, and the documented schema says an undefined number is ``null``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["json_value", "number", "records", "text"]


def number(value: Any) -> float | None:
    """A JSON-able number: NaN, inf and missing become None."""
    if value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def text(value: Any) -> str | None:
    """A JSON-able text: missing (None, NaN) becomes None."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def json_value(value: Any) -> Any:
    """Numbers cleaned (:func:`number`), anything else as it is."""
    is_number = isinstance(value, float | int | np.number) and not isinstance(value, bool)
    return number(value) if is_number else value


def records(frame: pd.DataFrame, fields: Iterable[str]) -> list[dict[str, Any]]:
    """Rows as dicts of the given fields, numbers cleaned for JSON."""
    names = [f for f in fields if f in frame.columns]
    return [{name: json_value(v) for name, v in zip(names, row, strict=True)}
            for row in frame[names].itertuples(index=False)]
