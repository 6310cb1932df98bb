"""`peft_course.settings` holds each default once: no module writes a known default as a literal.

The test reads the package's source (its AST, not its text, so comments and docstrings don't
count) and fails on a parameter or dataclass field whose default is written as the literal value
of a setting, e.g. `r: int = 8` instead of `r: int = LORA.r`, and on the embedded model's name
written out instead of `EMBEDDED_MODEL`. Then changing a default in settings changes it
everywhere, and `--help` shows what the code uses.
"""

from __future__ import annotations

import ast
from pathlib import Path

from peft_course.settings import EMBEDDED_MODEL, LORA, TRAINING

PACKAGE = Path(__file__).resolve().parents[1] / "peft_course"

# parameter or field name -> the setting's value a literal default must not repeat
KNOWN_DEFAULTS = {
    "r": LORA.r,
    "alpha": LORA.alpha,
    "learning_rate": TRAINING.learning_rate,
    "max_length": TRAINING.max_length,
}

# (module, name) pairs allowed to write the value, and why
ALLOWED = {
    ("settings.py", "*"): "the one place the defaults are written",
    ("counting.py", "r"): "LoraCase.r is a row of the counting chapter's table, not a setting",
}


def literal(node: ast.AST | None):
    """The value of a literal default (`8`, `16.0`, `"tiny-gpt2"`), or None for anything else."""
    if isinstance(node, ast.Constant) and not isinstance(node.value, bool):
        return node.value
    return None


def defaults(tree: ast.AST):
    """`(name, default node, line)` of every parameter and class-level field with a default."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            positional = node.args.posonlyargs + node.args.args
            for arg, default in zip(positional[-len(node.args.defaults) :], node.args.defaults):
                yield arg.arg, default, default.lineno
            for arg, default in zip(node.args.kwonlyargs, node.args.kw_defaults):
                if default is not None:
                    yield arg.arg, default, default.lineno
        elif isinstance(node, ast.ClassDef):
            for statement in node.body:
                if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
                    if statement.value is not None:
                        yield statement.target.id, statement.value, statement.lineno


def docstrings(tree: ast.AST) -> set[int]:
    """The ids of the string constants that are docstrings."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def violations(package: Path = PACKAGE) -> list[str]:
    """Every literal under `package` that repeats a setting, as `module:line: what`."""
    found = []
    for path in sorted(package.rglob("*.py")):
        module = str(path.relative_to(package))
        if (module, "*") in ALLOWED:
            continue
        tree = ast.parse(path.read_text())
        for name, node, line in defaults(tree):
            value = literal(node)
            expected = KNOWN_DEFAULTS.get(name)
            if (module, name) in ALLOWED or expected is None or value is None:
                continue
            if not isinstance(value, str) and value == expected:
                found.append(f"{module}:{line}: {name} = {value!r} (use the setting)")
        skip = docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value == EMBEDDED_MODEL:
                if id(node) not in skip:
                    found.append(f"{module}:{node.lineno}: {EMBEDDED_MODEL!r} (use EMBEDDED_MODEL)")
    return found


def test_no_module_writes_a_known_default_as_a_literal():
    found = violations()
    assert not found, "defaults written outside settings.py:\n" + "\n".join(found)


def test_the_check_finds_a_literal_default(tmp_path):
    """The check itself can fail: a planted `r: int = 8` and a planted model name are found."""
    (tmp_path / "planted.py").write_text(
        f"def prepare(model, r: int = {LORA.r}, model_name: str = {EMBEDDED_MODEL!r}):\n"
        '    """Docstrings may name tiny-gpt2."""\n'
    )
    found = violations(tmp_path)
    assert f"planted.py:1: r = {LORA.r} (use the setting)" in found, found
    assert f"planted.py:1: {EMBEDDED_MODEL!r} (use EMBEDDED_MODEL)" in found, found
    assert len(found) == 2, found  # not the docstring's mention
