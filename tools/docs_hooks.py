"""MkDocs hooks: what the site makes from the package and from its own structure at build time.

- Tables made from the package: a page writes a marker such as `<!-- methods table -->` where
  the table goes; the build replaces it with the table the package makes now, so a page cannot
  drift from the code (adding a method to `peft_course.registry` adds its row to the
  fine-tuning chapter).
- Provenance folded: a results page ends with the line saying what made it ("*Made by `...` on
  ... CPU capability ...*", `peft_course.system.provenance`). The chapters include those pages
  whole; the site shows the line in a collapsed "How this was made" box, so the reader meets
  the table, not the machine. The results files and what tests read from them stay as they are.
- Code shown as code, not as its documentation: a ```python block whose body includes sections
  of the package (`--8<-- "peft_course/lora.py:config"`) is filled here, before the snippets
  extension runs, with those sections less their docstrings (the reference pages show them) and
  gets the file as its title. `hl="text"` on the fence (repeatable) highlights each line that
  contains the text, so a page points at a line by what it says, not by a number that moves;
  `output="docs/examples/output/lora.txt"` shows under the code what a run of it printed
  (stored by tools/example_outputs.py), never output typed by hand.
- The chapters and the reference are two sequences: the footer's "next" on the last chapter
  does not lead into the API reference, nor "previous" on the first reference page back out.
"""

from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path
from typing import Any

from peft_course.registry import method_table

TABLES = {"<!-- methods table -->": method_table}
# A paragraph that opens with the provenance line (a wall time may follow it).
PROVENANCE = re.compile(r"<p>(<em>Made by <code>(?:(?!</p>).)*)</p>", re.S)
FOLDED = (
    '<details class="info provenance">\n<summary>How this was made</summary>\n<p>{}</p>\n</details>'
)
REFERENCE = "reference/"
ROOT = Path(__file__).resolve().parents[1]
# A fenced block: its indent, its opening (```python and options), its body, its closing.
FENCE = re.compile(
    r"^(?P<indent>[ ]*)```python(?P<options>[^\n]*)\n(?P<body>.*?)^(?P=indent)```$", re.S | re.M
)
INCLUDE = re.compile(r'^\s*--8<-- "(?P<path>[^":]+\.py)(?::(?P<section>\w+))?"\s*$')
MARKER = re.compile(r"--8<-- \[(?:start|end):\w+\]")
OPTION = re.compile(r'(?P<key>\w+)="(?P<value>[^"]*)"')
# Whose docstrings go: the package's and the tests' (their reference is the API pages); an
# exercise or an example script is shown whole.
STRIPPED = ("peft_course/", "tests/")
# The fence options the hook reads itself: `hl="text"` (a line to highlight, repeatable) and
# `output="docs/examples/output/<page>.txt"` (what the example printed, shown under it).
OWN = ("hl", "output")


def section(path: str, name: str | None) -> str:
    """The lines of `path` between its `--8<-- [start:name]` and `[end:name]` markers, dedented
    (the whole file, less markers, when `name` is None): what pymdownx.snippets would include."""
    lines = (ROOT / path).read_text().splitlines()
    if name is not None:
        start = next(i for i, line in enumerate(lines) if f"--8<-- [start:{name}]" in line)
        end = next(i for i, line in enumerate(lines) if f"--8<-- [end:{name}]" in line)
        lines = lines[start + 1 : end]
    return textwrap.dedent("\n".join(line for line in lines if not MARKER.search(line)))


def strip_docstrings(code: str) -> str:
    """`code` without the docstrings of its module, classes and functions (and the blank line
    after each); a body that was only a docstring becomes `...`. Code that does not parse on its
    own is returned as it is."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code
    lines = code.split("\n")
    cut: dict[int, str | None] = {}  # 0-based line -> None (drop) or its replacement
    for node in ast.walk(tree):
        if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        first = node.body[0] if node.body else None
        if not (
            isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
        ):
            continue
        start, end = first.lineno - 1, first.end_lineno or first.lineno
        for i in range(start, end):
            cut[i] = None
        if len(node.body) == 1:
            cut[start] = " " * first.col_offset + "..."
        elif end < len(lines) and not lines[end].strip():
            cut[end] = None
    kept = [cut.get(i, line) for i, line in enumerate(lines)]
    return "\n".join(line for line in kept if line is not None)


def show_code(markdown: str) -> str:
    """Fill each ```python block that only includes Python sections: their code without
    docstrings (package and tests), the file as the block's title, `hl="text"` as `hl_lines`."""

    def fill(match: re.Match[str]) -> str:
        includes = [INCLUDE.match(line) for line in match["body"].splitlines() if line.strip()]
        if not includes or not all(includes):
            return match[0]
        parts = []
        for include in includes:
            code = section(include["path"], include["section"])
            parts.append(strip_docstrings(code) if include["path"].startswith(STRIPPED) else code)
        code = "\n\n".join(part.strip("\n") for part in parts)
        options = OPTION.findall(match["options"])
        kept = " ".join(f'{key}="{value}"' for key, value in options if key not in OWN)
        if "title" not in dict(options):
            paths = dict.fromkeys(include["path"] for include in includes)
            kept = f'title="{", ".join(paths)}" {kept}'.strip()
        marks = [value for key, value in options if key == "hl"]
        if marks:
            numbers = [
                str(i)
                for i, line in enumerate(code.splitlines(), 1)
                if any(mark in line for mark in marks)
            ]
            missing = [mark for mark in marks if mark not in code]
            if missing:
                raise ValueError(f"hl={missing[0]!r} is in no line of {includes[0]['path']}")
            kept += f' hl_lines="{" ".join(numbers)}"'
        indent = match["indent"]
        block = f"```python {kept}\n{code}\n```"
        printed = dict(options).get("output")
        if printed:  # what a run printed, stored by tools/example_outputs.py
            text = (ROOT / printed).read_text().rstrip("\n")
            block += f'\n\n```text title="what it prints"\n{text}\n```'
        return "\n".join(indent + line if line else line for line in block.splitlines())

    return FENCE.sub(fill, markdown)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """Replace each marker in a page's Markdown with its table; fill the included code blocks."""
    for marker, table in TABLES.items():
        if marker in markdown:
            markdown = markdown.replace(marker, table())
    return show_code(markdown)


def fold_provenance(html: str) -> str:
    """Each paragraph that is only a provenance line, as a collapsed "How this was made" box."""
    return PROVENANCE.sub(lambda match: FOLDED.format(match[1]), html)


def on_page_content(html: str, **kwargs: Any) -> str:
    return fold_provenance(html)


def on_page_context(context: dict[str, Any], page: Any, **kwargs: Any) -> dict[str, Any]:
    """Cut the footer's previous / next where the chapters end and the reference begins."""
    here = page.file.src_uri.startswith(REFERENCE)
    if page.next_page is not None and page.next_page.file.src_uri.startswith(REFERENCE) != here:
        page.next_page = None
    if page.previous_page is not None and (
        page.previous_page.file.src_uri.startswith(REFERENCE) != here
    ):
        page.previous_page = None
    return context
