"""The one error type for mistakes a user can make, so that callers can tell them from bugs.

Every check of user input in the package (a bad option, an unreadable file, a label out of
range, a run directory that does not fit) raises a subclass of `CourseError`. The command line
turns exactly these into a one-line message; any other exception is a bug and keeps its
traceback. `CourseError` is a `ValueError`, so code that catches `ValueError` still works.

The checks below are the ones every module needs at its boundary: a whole number, a positive
number, a list of strings (never one string, which Python would happily iterate letter by
letter). Each names the parameter (or option) it checks and shows what it was given.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any


class CourseError(ValueError):
    """A problem with what the user gave: the message names the input and what is wrong."""


def describe(value: Any) -> str:
    """`value` as a message shows it: `the string '3'`, `8.5`, `True (a bool)`, `[1, 2] (a list)`.

    A long value is cut to its first 60 characters, so that the message stays one readable line.

    Args:
        value: anything a user gave.
    """
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    if isinstance(value, str):
        return f"the string {shown}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{shown} (a {type(value).__name__})"
    return shown


def check_int(name: str, value: Any, minimum: int | None = 1) -> int:
    """`value` if it is a whole number (a bool is not) of at least `minimum`, else a `CourseError`.

    A float such as 3.0 is refused too: an integer option given as a float is usually a slip
    (`r=8.5`), and silently truncating it would train something other than what was asked.

    Args:
        name: the parameter or option the message names.
        value: what the user gave.
        minimum: the smallest value allowed; None allows any integer.

    Returns:
        `value` as an `int`.

    Raises:
        CourseError: if `value` is not a whole number, or is below `minimum`.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        kind = "a positive integer" if minimum == 1 else "an integer"
        raise CourseError(f"{name} must be {kind}, got {describe(value)}")
    if minimum is not None and value < minimum:
        wanted = "a positive integer" if minimum == 1 else f"an integer of at least {minimum}"
        raise CourseError(f"{name} must be {wanted}, got {value}")
    return int(value)


def check_positive_int(name: str, value: Any) -> int:
    """`value` if it is an integer of at least 1 (a bool or a float is refused).

    Args:
        name: the parameter or option the message names.
        value: what the user gave.
    """
    return check_int(name, value, 1)


def check_number(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """`value` as a float if it is a finite real number within the interval, else a `CourseError`.

    `low_open`/`high_open` exclude the ends: `check_number("dropout", p, 0, 1, high_open=True)`
    asks for `0 <= p < 1`. A bool or a string is refused, not converted.

    Args:
        name: the parameter or option the message names.
        value: what the user gave.
        low: the lower end of the interval; None for no lower bound.
        high: the upper end of the interval; None for no upper bound.
        low_open: exclude `low` itself.
        high_open: exclude `high` itself.

    Raises:
        CourseError: if `value` is not a finite real number, or lies outside the interval.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise CourseError(f"{name} must be a number, got {describe(value)}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = "-inf" if low is None else f"{low:g}"
        right = "inf" if high is None else f"{high:g}"
        opening = "(" if low_open or low is None else "["
        closing = ")" if high_open or high is None else "]"
        interval = f"{opening}{left}, {right}{closing}"
        if low == 0 and low_open and high is None:
            raise CourseError(f"{name} must be positive, got {value:g}")
        raise CourseError(f"{name} must be in {interval}, got {value:g}")
    return float(value)


def check_positive_number(name: str, value: Any) -> float:
    """`value` as a float if it is a finite number above 0 (a learning rate, alpha, beta).

    Args:
        name: the parameter or option the message names.
        value: what the user gave.
    """
    return check_number(name, value, 0, None, low_open=True)


def check_string_list(name: str, value: Any, allow_empty: bool = False) -> list[str]:
    """`value` as a list if it is a list or tuple of strings; a single string is refused.

    Python iterates a string letter by letter, so `label_names="negative positive"` would
    otherwise become 17 one-letter labels.

    Args:
        name: the parameter or option the message names.
        value: what the user gave.
        allow_empty: accept an empty list (by default one is refused).

    Raises:
        CourseError: if `value` is a string or not a sequence, holds a non-string, or is empty
            (unless `allow_empty`).
    """
    if isinstance(value, str):
        raise CourseError(
            f"{name} must be a list of strings, got the string {value!r}"
            f" (write [{value!r}] for a list of one)"
        )
    if not isinstance(value, Sequence):
        raise CourseError(f"{name} must be a list of strings, got {describe(value)}")
    items = list(value)
    for position, item in enumerate(items, start=1):
        if not isinstance(item, str):
            raise CourseError(
                f"{name} must be a list of strings, but item {position} is {describe(item)}"
            )
    if not items and not allow_empty:
        raise CourseError(f"{name} is empty: give at least one")
    return items


def check_distinct(name: str, values: Sequence[Any]) -> None:
    """Refuse a list that names the same thing twice (two labels, cells or seeds that are one).

    Args:
        name: the parameter or option the message names.
        values: the items to check.

    Raises:
        CourseError: if an item occurs more than once.
    """
    seen: set[Any] = set()
    for value in values:
        if value in seen:
            raise CourseError(f"{name} repeats {value!r}: {list(values)}")
        seen.add(value)


def check_module(name: str, value: Any) -> None:
    """Refuse a `value` that is not a torch module (`None`, a path, a tokenizer) in one line,
    rather than an `AttributeError` from deep inside the function it was given to.

    Args:
        name: the argument's name, for the message.
        value: what was given.
    """
    if not callable(getattr(value, "named_parameters", None)):
        raise CourseError(f"{name} must be a torch module (an nn.Module), got {describe(value)}")


def one_line(error: BaseException) -> str:
    """The error's message on one line (a library's message inside it may span several).

    Args:
        error: the exception whose message is shown.
    """
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())
