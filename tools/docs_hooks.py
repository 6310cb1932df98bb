"""MkDocs hooks: what the site makes from the package and from its own structure at build time.

- Tables made from the package: a page writes a marker such as `<!-- methods table -->` where
  the table goes; the build replaces it with the table the package makes now, so a page cannot
  drift from the code (adding a method to `peft_course.registry` adds its row to the
  fine-tuning chapter).
- Provenance folded: a results page ends with the line saying what made it ("*Made by `...` on
  ... CPU capability ...*", `peft_course.system.provenance`). The chapters include those pages
  whole; the site shows the line in a collapsed "How this was made" box, so the reader meets
  the table, not the machine. The results files and what tests read from them stay as they are.
- The chapters and the reference are two sequences: the footer's "next" on the last chapter
  does not lead into the API reference, nor "previous" on the first reference page back out.
"""

from __future__ import annotations

import re
from typing import Any

from peft_course.registry import method_table

TABLES = {"<!-- methods table -->": method_table}
# A paragraph that opens with the provenance line (a wall time may follow it).
PROVENANCE = re.compile(r"<p>(<em>Made by <code>(?:(?!</p>).)*)</p>", re.S)
FOLDED = (
    '<details class="info provenance">\n<summary>How this was made</summary>\n<p>{}</p>\n</details>'
)
REFERENCE = "reference/"


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """Replace each marker in a page's Markdown with its table."""
    for marker, table in TABLES.items():
        if marker in markdown:
            markdown = markdown.replace(marker, table())
    return markdown


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
