"""MkDocs hooks: tables the site shows that are made from the package at build time.

A page writes a marker such as `<!-- methods table -->` where the table goes; the build
replaces it with the table the package makes now, so a page cannot drift from the code (adding
a method to `peft_course.registry` adds its row to the fine-tuning chapter).
"""

from __future__ import annotations

from typing import Any

from peft_course.registry import method_table

TABLES = {"<!-- methods table -->": method_table}


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """Replace each marker in a page's Markdown with its table."""
    for marker, table in TABLES.items():
        if marker in markdown:
            markdown = markdown.replace(marker, table())
    return markdown
