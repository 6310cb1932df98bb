"""The site's build hook shows included code without its docstrings, under its file's name."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "tools" / "docs_hooks.py")
hooks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hooks)

CODE = '''class Layer:
    """What it is.

    Why it is.
    """

    def forward(self, x):
        """The docstring."""
        return x + 1  # the code

    def stub(self):
        """Only a docstring."""
'''


def test_docstrings_go_and_the_code_stays():
    stripped = hooks.strip_docstrings(CODE)
    assert "docstring" not in stripped and "What it is" not in stripped
    assert "return x + 1  # the code" in stripped
    assert stripped.splitlines()[:2] == ["class Layer:", "    def forward(self, x):"]
    compile(stripped, "stripped", "exec")  # the stub's body became `...`, still Python


def test_a_block_gets_its_title_and_the_lines_the_text_points_at():
    block = (
        '```python hl="def merge_and_unload"\n--8<-- "peft_course/lora.py:merge_and_unload"\n```'
    )
    shown = hooks.show_code(block)
    header, *body = shown.splitlines()
    assert 'title="peft_course/lora.py"' in header
    line = next(i for i, text in enumerate(body, 1) if "def merge_and_unload" in text)
    assert f'hl_lines="{line}"' in header
    assert '"""' not in shown and "--8<--" not in shown


def test_text_pointed_at_that_is_not_there_fails_the_build():
    block = '```python hl="no such line"\n--8<-- "peft_course/lora.py:merge_and_unload"\n```'
    with pytest.raises(ValueError, match="no such line"):
        hooks.show_code(block)


def test_an_example_shows_what_it_printed_under_it(tmp_path, monkeypatch):
    (tmp_path / "example.py").write_text('"""An example."""\n\nprint(1 + 1)\n')
    (tmp_path / "example.txt").write_text("2\n")
    monkeypatch.setattr(hooks, "ROOT", tmp_path)
    shown = hooks.show_code('```python output="example.txt"\n--8<-- "example.py"\n```')
    code, printed = shown.split("\n\n```text")
    assert code.startswith('```python title="example.py"') and "output=" not in code
    assert '"""An example."""' in code  # an example is shown whole
    assert printed == ' title="what it prints"\n2\n```'
