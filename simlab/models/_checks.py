"""The positive-integer check every model builder runs on its sizes (``num_classes``, ``width``, ...).

Kept here, not `simlab._validate.check_num_classes`, for its wording ("width must be a positive
integer"), which tests/test_input_errors.py pins for the spec's ``model_args`` errors.
"""

from __future__ import annotations

from typing import Any


def check_positive_int(name: str, value: Any) -> None:
    """ValueError naming ``name`` unless ``value`` is an ``int`` (not a bool) greater than 0."""
    if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
