"""The `peft-course` command: one subcommand per thing the course runs.

Each subcommand is a thin layer over a chapter function, so what the command prints is what
a learner gets by calling that function from Python.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from peft_course.data import REGISTRY, DataError, load_classification_data
from peft_course.models import DEFAULT_MODEL, ModelLoadError


def add_data_arguments(parser: argparse.ArgumentParser, default_dataset: str) -> None:
    """`--dataset` or local files, their column names, and subsampling."""
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", default=default_dataset,
                       help=f"a registered dataset ({', '.join(sorted(REGISTRY))}); default: %(default)s")
    group.add_argument("--train-file", help="local CSV/TSV/JSONL/Parquet training file (instead of the hub)")
    group.add_argument("--validation-file", help="local validation file (default: 10%% of train)")
    group.add_argument("--test-file", help="local test file (default: 10%% of train)")
    group.add_argument("--text-column", help="column holding the text")
    group.add_argument("--text-pair-column", help="column holding the second text of a pair")
    group.add_argument("--label-column", help="column holding the label")
    group.add_argument("--label-names", nargs="+", help="label names, in label-id order")
    group.add_argument("--max-examples", type=int, help="keep at most this many rows per split (seeded)")


def data_from_arguments(args: argparse.Namespace):
    """Load the classification data the data arguments describe."""
    return load_classification_data(
        args.dataset, train_file=args.train_file, validation_file=args.validation_file,
        test_file=args.test_file, text_column=args.text_column,
        text_pair_column=args.text_pair_column, label_column=args.label_column,
        label_names=args.label_names, max_examples=args.max_examples, seed=args.seed,
    )


def command_info(args: argparse.Namespace) -> None:
    from peft_course.system import system_info

    for key, value in system_info().items():
        print(f"{key:>22}: {value}")


def command_demo(args: argparse.Namespace) -> None:
    from peft_course.demo import demo_rows, markdown_table, write_table

    data = data_from_arguments(args)
    rows = demo_rows(data, args.model, args.seed, args.max_length, progress=not args.no_progress)
    path = write_table(rows, args.output)
    print(f"\n{data.name} with {args.model} (test split, best-validation checkpoint)\n")
    print(markdown_table(rows))
    print(f"saved: {path} and {path.with_suffix('.csv')}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with `--help` on every subcommand."""
    parser = argparse.ArgumentParser(
        prog="peft-course", description="Parameter-efficient fine-tuning and alignment on GPT-2.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser("info", help="library versions, CUDA, and whether 4-bit works here")
    info.set_defaults(run=command_info)

    demo = commands.add_parser(
        "demo", help="untrained vs fine-tuned: the results table on the embedded default",
        description="Evaluate the untrained model, fine-tune with each method, print a table.")
    demo.add_argument("--model", default="tiny-gpt2",
                      help=f"tiny-gpt2 (embedded), a local checkpoint directory, or a hub id such as {DEFAULT_MODEL}")
    add_data_arguments(demo, "synthetic-sentiment")
    demo.add_argument("--max-length", type=int, default=256, help="truncate texts to this many tokens")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--output", type=Path, default=Path("runs/demo"), help="where the table is saved")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    demo.set_defaults(run=command_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the subcommand; known input errors print one line, not a traceback."""
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (DataError, ModelLoadError, ValueError) as error:
        print(f"peft-course {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
