"""An option declared once: a dataclass field is both a Python argument and a command-line flag.

Each config dataclass the `peft-course` command builds declares its fields with `option(...)`:
the default, the help, and the check of its value. `cli.add_options` turns those fields into the
arguments of a parser; `from_options` builds the dataclass back from the parsed command line.
The dataclass's `__post_init__` calls `check_options`, so a value is checked the same way
whether it came from a script or the command line; only its name differs (`epochs` from Python,
`--epochs` from the command line). This is how TRL declares its trainers' configs, in a few
dozen lines.

The module imports neither torch nor the course's models, so that `peft-course --help` is fast.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from peft_course.errors import (
    CourseError,
    check_distinct,
    check_int,
    check_number,
    check_positive_int,
    check_positive_number,
    check_string_list,
    describe,
)

Check = Callable[[str, Any], Any]
_AS_FLAGS = contextvars.ContextVar("as_flags", default=False)


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str | Callable[[], str],
    check: Check | None = None,
    **cli: Any,
):
    """A dataclass field with its help and check, for `cli.add_options` and `check_options`.

    Args:
        default: the field's default; a list or dict default is copied for each instance.
        help: what the option does, as `--help` shows it (the default is appended); a
            function is called when the parser is built (a list of the registry's methods).
        check: `check(name, value)` raises a `CourseError` naming `name` if `value` is wrong;
            None checks the type only (a bool, or nothing). None values of an optional field
            are not checked.
        **cli: how the command line spells it, where the field's type cannot say: `flag`
            (e.g. "--rslora"), `choices` (or a function returning them), `metavar`,
            `positional=True`, `cli=False` (Python only).
    """
    metadata = {"help": help, "check": check, **cli}
    if isinstance(default, (list, dict)):
        return dataclasses.field(
            default_factory=functools.partial(type(default), default), metadata=metadata
        )
    return dataclasses.field(default=default, metadata=metadata)


def documented(cls: type) -> type:
    """Add an `Attributes:` section made from the fields' help to dataclass `cls`'s docstring.

    Each field is documented once, in its `option(help=...)`: `help(TrainConfig)` and the API
    reference show the same words as `--help`.
    """
    helps = {f.name: f.metadata["help"] for f in dataclasses.fields(cls) if "help" in f.metadata}
    lines = [
        f"    {name}: {(text() if callable(text) else text).replace('%%', '%')}"
        for name, text in helps.items()
    ]
    cls.__doc__ = f"{inspect.cleandoc(cls.__doc__ or '')}\n\nAttributes:\n" + "\n".join(lines)
    return cls


def positive_int(name: str, value: Any) -> int:
    """A count: a whole number of at least 1."""
    return check_positive_int(name, value)


def non_negative_int(name: str, value: Any) -> int:
    """A seed or a number of shots: a whole number of at least 0."""
    return check_int(name, value, minimum=0)


def positive_number(name: str, value: Any) -> float:
    """A rate or a scale: a finite number above 0."""
    return check_positive_number(name, value)


def interval(
    low: float | None, high: float | None, low_open: bool = False, high_open: bool = False
) -> Check:
    """A check that a number lies in an interval: `interval(0, 1, high_open=True)` for a dropout."""
    return lambda name, value: check_number(name, value, low, high, low_open, high_open)


def at_least(minimum: int) -> Check:
    """A check that a whole number is at least `minimum` (`max_length` needs two tokens)."""
    return lambda name, value: check_int(name, value, minimum=minimum)


def distinct_strings(name: str, value: Any) -> list[str]:
    """A list of names none of which repeats (label names, strategies)."""
    names = check_string_list(name, value)
    check_distinct(name, names)
    return names


def device_name(name: str, value: Any) -> Any:
    """A device this machine has (`cpu`, `cuda`, `cuda:1`); torch is imported only to check one."""
    from peft_course.system import check_device  # here: the parser and the configs load no torch

    return check_device(value)


def shown(field: dataclasses.Field) -> str:
    """The name an error message uses: the field's, or its flag inside `as_flags()`."""
    return flag_of(field) if _AS_FLAGS.get() else field.name


def flag_of(field: dataclasses.Field) -> str:
    """The field's command-line flag: `--max-length` for `max_length`, unless it names another."""
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def typed_fields(command_line: Sequence[str], *classes: type) -> dict[str, str]:
    """The fields of `classes` whose flag (or its `--no-` form) is in `command_line`, each with
    the flag as typed: what tells a value the user gave from a default the parser filled in.

    Args:
        command_line: the arguments as typed (`--beta 0.2`, `--beta=0.2`, `--no-lora`).
        *classes: the dataclasses whose fields are the command's options.
    """
    typed = {token.split("=", 1)[0] for token in command_line if token.startswith("--")}
    found = {}
    for cls in classes:
        for field in dataclasses.fields(cls):
            flag = flag_of(field)
            for spelling in (flag, "--no-" + flag[2:]):
                if spelling in typed:
                    found[field.name] = spelling
    return found


def spelled(name: str) -> str:
    """`name` as a message shows it: the argument's name, or its flag inside `as_flags()`."""
    return "--" + name.replace("_", "-") if _AS_FLAGS.get() else name


def shown_name(config: Any, name: str) -> str:
    """`shown` for the field `name` of dataclass instance `config` (for checks across fields)."""
    return shown(next(f for f in dataclasses.fields(config) if f.name == name))


@contextlib.contextmanager
def as_flags() -> Iterator[None]:
    """Inside it, `check_options` names fields as the command line spells them (`--max-length`)."""
    token = _AS_FLAGS.set(True)
    try:
        yield
    finally:
        _AS_FLAGS.reset(token)


@functools.cache
def field_types(cls: type) -> dict[str, tuple[Any, bool]]:
    """Each field's type with `None` taken out, and whether `None` is allowed."""
    types_ = {}
    for name, hint in typing.get_type_hints(cls).items():
        args = typing.get_args(hint)
        optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args
        if optional:
            inner = [a for a in args if a is not type(None)]
            hint = inner[0] if len(inner) == 1 else typing.Union[tuple(inner)]
        types_[name] = (hint, optional)
    return types_


def check_options(config: Any) -> None:
    """Check each field of a dataclass instance with its declared check (bool fields: a bool).

    Raises:
        CourseError: naming the first field whose value is wrong, and what it was given.
    """
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        kind, optional = field_types(type(config))[field.name]
        if value is None and optional:
            continue
        if kind is bool and not isinstance(value, bool):
            allowed = "True, False or None" if optional else "True or False"
            raise CourseError(f"{shown(field)} must be {allowed}, got {describe(value)}")
        if field.metadata.get("check") is not None:
            field.metadata["check"](shown(field), value)


def default_of(field: dataclasses.Field) -> Any:
    """The field's default, calling its factory if it has one."""
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def from_options(
    cls: type,
    args: Any,
    *,
    only: tuple[str, ...] | None = None,
    skip: tuple[str, ...] = (),
    **given: Any,
) -> Any:
    """Build dataclass `cls` from the parsed command line; `given` overrides or adds fields.

    A sequence the parser returns as a list becomes a tuple where the field is a tuple. Errors
    name the option as typed (`--epochs must be a positive integer, got 0`).

    Args:
        cls: the dataclass whose fields are options of the parsed command.
        args: the parsed command line.
        only: if given, the only fields read from `args` (as in `cli.add_options`).
        skip: fields not read from `args`: they keep their defaults unless given.
        **given: fields set by the command itself.
    """
    values = {}
    for field in dataclasses.fields(cls):
        if field.name in given or field.name in skip or not hasattr(args, field.name):
            continue
        if only is not None and field.name not in only:
            continue
        value = getattr(args, field.name)
        kind, _ = field_types(cls)[field.name]
        if isinstance(value, list) and typing.get_origin(kind) is tuple:
            value = tuple(value)
        values[field.name] = value
    with as_flags():
        return cls(**values, **given)
