"""Where the pages go, and the line that ends each: the command that made it.

The line comes from `peft_course.system.provenance`: the command, the CPU's kernel set and the
library versions. Figures trained on a CPU are reproduced exactly only under the same kernel
set; the tests compare a fresh run with the pages within the spread measured across kernel
sets (`benchmarks/cpu_spread.py`, `docs/results/cpu-spread.md`).
"""

from __future__ import annotations

from pathlib import Path

from peft_course.files import atomic_write_text
from peft_course.system import provenance

RESULTS, IMAGES = Path("docs/results"), Path("docs/images")
COMMAND = "python -m peft_course.pages"


def stamp(path: Path, command: str) -> Path:
    """End the page at `path` with its provenance line, replacing an older one.

    Args:
        path: the Markdown page, rewritten in place.
        command: the command named in the provenance line.

    Returns:
        The page's path.
    """
    lines = [
        line
        for line in path.read_text().rstrip("\n").splitlines()
        if not line.startswith("*Made by `")
    ]
    while lines and not lines[-1].strip():
        lines.pop()
    return atomic_write_text(path, "\n".join(lines) + "\n\n" + provenance(command) + "\n")
