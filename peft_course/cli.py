"""The `peft-course` command: one subcommand per thing the course runs, its options generated.

Each subcommand is a dataclass of its own options (`peft_course.command_options`) plus the
config dataclasses it builds (`TrainConfig`, `DataOptions`, `DPORunConfig`, ...);
`peft_course.options.add_options` makes the parser from their fields, so an option is declared
once, where its field is. What
each subcommand does is in `peft_course.commands`, imported after parsing, so that `--help`
(and a mistyped option) imports no torch.
"""

from __future__ import annotations

import argparse
import errno
import sys
import dataclasses
import typing
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

from peft_course.command_options import (
    Ablate,
    Align,
    Compare,
    Count,
    Demo,
    Dpo,
    Export,
    Finetune,
    Gpt2,
    Info,
    Instruct,
    Lora,
    Predict,
    Prompt,
    Sampling,
)
from peft_course.configs import DataOptions, DPORunConfig, LoraOptions, SweepSettings, TrainConfig
from peft_course.errors import CourseError, one_line
from peft_course.options import as_flags, default_of, field_types, flag_of, from_options
from peft_course.registry import METHODS, get_method
from peft_course.settings import INSTRUCT, PROMPTING


def shown_default(value: Any) -> str:
    """A default as `--help` shows it: a list as its items, a string quoted (a newline shows)."""
    if isinstance(value, tuple):
        return " ".join(map(str, value)).replace("%", "%%")
    return repr(value).replace("%", "%%") if isinstance(value, str) else str(value)


def add_options(
    parser: Any,
    cls: type,
    *,
    skip: tuple[str, ...] = (),
    only: tuple[str, ...] | None = None,
    given_only: bool = False,
    **defaults: Any,
) -> None:
    """Add the fields of dataclass `cls` to `parser` (or an argument group) as options.

    The type gives the conversion (`int`, `float`, `Path`; a tuple or list takes one or more
    values); a bool that defaults to False is a switch, one that defaults to True or None gets
    `--x/--no-x`. A field without a default is required.

    Args:
        parser: an `argparse` parser or argument group.
        cls: the dataclass.
        skip: fields left out (the command sets them itself).
        only: if given, the fields added (the rest keep their defaults).
        given_only: leave an option out of the parsed namespace unless it is typed, so that a
            command can tell what the user set (the help still shows the default).
        **defaults: other defaults than the field's, for this command only.
    """
    for declared in dataclasses.fields(cls):
        if declared.name in skip or (only is not None and declared.name not in only):
            continue
        if not declared.metadata.get("cli", True) or "help" not in declared.metadata:
            continue
        kind, _ = field_types(cls)[declared.name]
        default = defaults.get(declared.name, default_of(declared))
        text = declared.metadata["help"]
        spec: dict[str, Any] = {"help": text() if callable(text) else text, "dest": declared.name}
        if default is not dataclasses.MISSING:
            spec["default"] = argparse.SUPPRESS if given_only else default
            plain = default is None or isinstance(default, bool) or default == ()
            if not plain and "default" not in spec["help"]:
                spec["help"] += f" (default: {shown_default(default)})"
        for key in ("choices", "metavar"):
            if key in declared.metadata:
                value = declared.metadata[key]
                spec[key] = value() if callable(value) else value
        if kind is bool:
            spec["action"] = "store_true" if default is False else argparse.BooleanOptionalAction
        elif typing.get_origin(kind) in (tuple, list):
            spec["nargs"] = "+"
            spec["type"] = typing.get_args(kind)[0]
        elif kind in (int, float, str, Path):
            spec["type"] = kind
        if declared.metadata.get("positional"):
            spec.pop("dest")
            parser.add_argument(declared.name, **spec)
            continue
        if default is dataclasses.MISSING:
            spec["required"] = True
        parser.add_argument(flag_of(declared), **spec)


@dataclass(frozen=True)
class Group:
    """Options of a config dataclass that a command builds, shown under `title` in its help.

    Attributes:
        title: the heading in `--help`.
        cls: the config dataclass.
        skip: its fields the command declares or sets itself.
        only: if given, the only fields offered.
        defaults: this command's defaults where they differ from the dataclass's.
    """

    title: str
    cls: type
    skip: tuple[str, ...] = ()
    only: tuple[str, ...] | None = None
    defaults: dict = field(default_factory=dict)


def method_option_groups() -> tuple[Group, ...]:
    """`finetune`'s method options: one group per options class of the registry, each field once,
    under the methods that take it.

    The options are left out of the parsed command line unless typed, so that an option the
    chosen method does not take is refused rather than ignored.
    """
    options = [m.options for m in METHODS.values() if m.options is not None]
    classes = dict.fromkeys(c for o in options for c in reversed(o.__mro__) if is_dataclass(c))
    groups = []
    for cls in classes:
        users = [n for n, m in METHODS.items() if m.options and issubclass(m.options, cls)]
        own = tuple(name for name in cls.__annotations__ if name in cls.__dataclass_fields__)
        groups.append(Group(f"options of {', '.join(users)}", cls, only=own))
    return tuple(groups)


DATA = Group("data", DataOptions)
# subcommand -> (its own options, the configs it builds); a function in the groups makes them
# when the parser is built (the registry's method options)
COMMANDS: dict[str, tuple[type, tuple[Any, ...]]] = {
    "info": (Info, ()),
    "demo": (Demo, (DATA,)),
    "finetune": (
        Finetune,
        (DATA, Group("training", TrainConfig, skip=("learning_rate",)), method_option_groups),
    ),
    "predict": (Predict, ()),
    "export": (Export, ()),
    "count": (Count, ()),
    "lora": (
        Lora,
        (
            Group(
                "training",
                TrainConfig,
                only=("epochs", "learning_rate", "seed", "progress"),
                defaults={
                    "epochs": get_method("lora").demo_epochs,
                    "learning_rate": get_method("lora").learning_rate,
                },
            ),
            Group("LoRA", LoraOptions, only=("r", "alpha")),
        ),
    ),
    "gpt2": (Gpt2, (Group("decoding", Sampling),)),
    "instruct": (
        Instruct,
        (
            Group(
                "training",
                TrainConfig,
                only=("epochs", "batch_size", "seed", "progress"),
                defaults={"epochs": INSTRUCT.epochs, "batch_size": INSTRUCT.batch_size},
            ),
            Group(
                "LoRA",
                LoraOptions,
                only=("r", "alpha", "targets"),
                defaults={"r": INSTRUCT.r, "alpha": INSTRUCT.alpha},
            ),
        ),
    ),
    "prompt": (
        Prompt,
        (
            Group(
                "decoding",
                Sampling,
                skip=("top_k",),
                defaults={
                    "max_new_tokens": PROMPTING.max_new_tokens,
                    "temperature": PROMPTING.temperature,
                    "top_p": PROMPTING.top_p,
                },
            ),
        ),
    ),
    "dpo": (Dpo, (Group("DPO", DPORunConfig),)),
    "align": (Align, (Group("training (beta: every loss's but ORPO's)", DPORunConfig),)),
    "ablate": (
        Ablate,
        (DATA, Group("every cell", SweepSettings, skip=("model", "epochs"))),
    ),
    "compare": (Compare, (DATA,)),
}


def groups_of(command: str) -> list[Group]:
    """The config groups of `command`, the ones made from the registry made now."""
    groups: list[Group] = []
    for group in COMMANDS[command][1]:
        groups.extend(group() if callable(group) else [group])
    return groups


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with `--help` on every subcommand; `peft_course.commands` runs them."""
    parser = argparse.ArgumentParser(
        prog="peft-course", description="Parameter-efficient fine-tuning and alignment on GPT-2."
    )
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (options, _) in COMMANDS.items():
        text = (options.__doc__ or "").split("\n\nAttributes:")[0]
        summary, _, description = text.partition("\n")
        sub = subcommands.add_parser(
            name, help=summary, description=" ".join(description.split()) or summary
        )
        add_options(sub, options)
        for group in groups_of(name):
            add_options(
                sub.add_argument_group(group.title),
                group.cls,
                skip=group.skip,
                only=group.only,
                given_only=name == "finetune" and group.cls not in (DataOptions, TrainConfig),
                **group.defaults,
            )
    return parser


def check_groups(args: argparse.Namespace) -> None:
    """Build the command's option dataclasses once, so every range is checked before any work.

    Raises:
        CourseError: naming the first option whose value is wrong, as typed (`--epochs`).
    """
    from_options(COMMANDS[args.command][0], args)
    for group in groups_of(args.command):
        from_options(group.cls, args, only=group.only, skip=group.skip)


# a full disk, a quota, a read-only or forbidden place: the machine's state, not a bug
FULL_OR_FORBIDDEN = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the subcommand; a user's mistake prints one line and returns 2.

    Only `CourseError` is a user's mistake; any other exception is a bug and keeps its
    traceback. Ctrl-C prints one line saying how to continue and returns 130, as shells do.

    Args:
        argv: the command-line arguments; None reads `sys.argv`.

    Returns:
        The exit status: 0, 2 after a `CourseError`, 130 after Ctrl-C.
    """
    args = build_parser().parse_args(argv)
    args.command_line = ["peft-course", *(sys.argv[1:] if argv is None else argv)]  # for a record
    # here, after parsing: `--help` and usage errors import no torch
    from peft_course.system import quiet_library_noise

    quiet_library_noise()  # before commands imports bitsandbytes
    from peft_course import commands

    try:
        with as_flags():
            check_groups(args)
            commands.check_arguments(args)
        with commands.writing_output(args):
            getattr(commands, f"command_{args.command}")(args)
    except CourseError as error:
        print(f"peft-course {args.command}: error: {one_line(error)}", file=sys.stderr)
        return 2
    except OSError as error:
        if error.errno not in FULL_OR_FORBIDDEN:
            raise
        where = f" ({error.filename})" if error.filename else ""
        print(
            f"peft-course {args.command}: error: {error.strerror}{where}; files already saved are "
            "complete (each is written whole or not at all)",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print(f"peft-course {args.command}: {commands.interrupted_message(args)}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
