"""`python -m peft_course.pages [name ...]`: remake the docs' results pages and figures.

    python -m peft_course.pages                                  # every embedded-model page
    python -m peft_course.pages demo gpt2                        # some of them
    python -m peft_course.pages real-model --data-dir ../shared/data   # every SmolLM2 page
    python -m peft_course.pages real-finetune --scale full --device cuda

A name is a group of pages on the embedded tiny-gpt2 (`results.GROUPS`, about 17 CPU minutes
in all) or a page on SmolLM2-135M-Instruct and real data (`real_model.PARTS`, about three CPU
hours in all, resumable); `embedded` and `real-model` name each set whole.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from peft_course.errors import CourseError
from peft_course.pages.real_model import PARTS, SCALES, Context
from peft_course.pages.results import GROUPS, regenerate
from peft_course.pages.stamp import COMMAND, IMAGES, RESULTS
from peft_course.smollm2 import SMOLLM2

SETS = {"embedded": GROUPS, "real-model": tuple(PARTS)}


def names_help() -> str:
    """The help's list of names, wrapped without breaking a name at its hyphen."""
    names = {
        "embedded": "every group on tiny-gpt2 (the default)",
        "real-model": "every page on SmolLM2",
        "groups on tiny-gpt2": ", ".join(GROUPS),
        "pages on SmolLM2": ", ".join(PARTS),
    }
    lines = [
        textwrap.fill(
            f"{key}: {text}",
            78,
            initial_indent="  ",
            subsequent_indent="    ",
            break_on_hyphens=False,
        )
        for key, text in names.items()
    ]
    return "\n".join(["names:", *lines])


def build_parser() -> argparse.ArgumentParser:
    """The command's parser: page names, where pages go, and how the real-model pages run."""
    parser = argparse.ArgumentParser(
        prog=COMMAND,
        description="Remake the docs' results pages and figures, each ending with the\n"
        "command, machine and versions that made it.",
        epilog=names_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "names", nargs="*", metavar="name", help="pages to remake (default: embedded)"
    )
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help="where the pages go (default: %(default)s)"
    )
    parser.add_argument(
        "--images",
        type=Path,
        default=IMAGES,
        help="where the embedded pages' figures go (default: %(default)s)",
    )
    real = parser.add_argument_group("the real-model pages (real-*)")
    real.add_argument("--model", default=SMOLLM2, help="default: %(default)s (the pages' model)")
    real.add_argument(
        "--data-dir",
        type=Path,
        default=Path("../shared/data"),
        help="where the real datasets are (default: %(default)s)",
    )
    real.add_argument(
        "--work",
        type=Path,
        default=Path("runs/real-model"),
        help="finished work, kept for reruns (default: %(default)s)",
    )
    real.add_argument(
        "--scale", choices=list(SCALES), default="cpu", help="cpu sizes (the pages) or full splits"
    )
    real.add_argument("--device", help="cpu, cuda, ... (default: cuda if present)")
    real.add_argument("--fresh", action="store_true", help="recompute finished work")
    real.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def expand(names: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """`names` with each set replaced by its members, in order, without repeats.

    Args:
        names: the names given; empty means `embedded`.
        parser: reports an unknown name (and exits with status 2).
    """
    known = (*SETS, *GROUPS, *PARTS)
    unknown = [name for name in names if name not in known]
    if unknown:
        parser.error(f"unknown page name(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    expanded = [member for name in names or ["embedded"] for member in SETS.get(name, (name,))]
    return list(dict.fromkeys(expanded))


def main(argv: list[str] | None = None) -> int:
    """Remake the named pages; a missing model or data directory is one line, not a traceback.

    Args:
        argv: the command-line arguments; None reads `sys.argv`.

    Returns:
        The exit status: 0, or 2 after a `CourseError`.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    names = expand(args.names, parser)
    context = Context(
        args.model,
        args.scale,
        args.data_dir,
        args.results,
        args.work,
        SCALES[args.scale],
        args.device,
        not args.no_progress,
        args.fresh,
    )
    try:
        for name in names:
            if name in PARTS:
                pages = PARTS[name](context)
            else:
                pages = regenerate([name], args.results, args.images)
            for path in pages:
                print(f"saved {path}")
    except CourseError as error:
        print(f"{COMMAND}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
