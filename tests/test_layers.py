"""The package's layers: every internal import goes down (or sideways), and none closes a circle.

    utilities -> models and data -> techniques -> pipelines -> demo and pages -> commands -> cli

A learner can read a technique (LoRA from scratch, the DPO loss) without the pipeline or the
demo above it, and a linter may move every import to the top without meeting a partially
initialised module. Imports are read with `ast`, so the test sees imports inside functions too.
"""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "peft_course"
LAYER_NAMES = (
    "utilities",
    "models and data",
    "techniques",
    "pipelines",
    "demo and pages",
    "commands",
    "cli",
)
LAYERS = {
    **dict.fromkeys(
        (
            "errors",
            "files",
            "settings",
            "tables",
            "plots",
            "metrics",
            "system",
            "distributed",
            "tolerances",
            "options",
            "configs",
            "registry",
            "event_logs",
        ),
        0,
    ),
    **dict.fromkeys(
        ("models", "tiny_gpt2", "tiny_llama", "smollm2", "data", "synthetic", "word_problems"), 1
    ),
    **dict.fromkeys(
        (
            "counting",
            "lora",
            "methods",
            "qlora",
            "lm_classification",
            "prompting",
            "dpo",
            "derivations",
            "preference",
            "preference_derivations",
            "gpt2",
            "decoding",
            "peft_family",
            "ia3",
            "dora",
            "cost",
        ),
        2,
    ),
    **dict.fromkeys(
        ("training", "finetune", "runs", "export", "ablation", "instruct", "compare", "online_rl"),
        3,
    ),
    **dict.fromkeys(("demo", "pages"), 4),
    **dict.fromkeys(("commands", "command_options"), 5),
    **dict.fromkeys(("cli", "__main__", "__init__"), 6),
}
# Imports inside a function, so that `--help` loads no torch (test_help_imports_no_torch):
# `cli.main` imports the handlers after parsing, and the options' device check imports
# `system` (and with it torch) only when a device is named. (module, imported module, function)
FUNCTION_LEVEL_ALLOWED = {
    ("cli", "commands", "main"),
    ("cli", "system", "main"),  # its torch import waits for parsing, as commands' does
    ("options", "system", "device_name"),
}
# `commands` imports each chapter inside the handler that runs it, so that a command loads only
# what it uses (`count` no trl or matplotlib, `info` no peft; tests/test_import_cost.py): any of
# its functions may import a module, and its top-level imports are utilities only
# (test_commands_imports_chapters_in_its_handlers).
IMPORTS_IN_HANDLERS = "commands"


def internal_imports(path: Path) -> list[tuple[str, int, str | None]]:
    """(imported course module, line, enclosing function or None) for each import in `path`."""
    found: list[tuple[str, int, str | None]] = []

    def visit(node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, function or child.name)
                continue
            targets: list[str] = []
            if isinstance(child, ast.Import):
                targets = [
                    a.name.split(".")[1] for a in child.names if a.name.startswith("peft_course.")
                ]
            elif isinstance(child, ast.ImportFrom) and (child.module or "").startswith(
                "peft_course"
            ):
                module = child.module or ""
                targets = (
                    [a.name for a in child.names]
                    if module == "peft_course"
                    else [module.split(".")[1]]
                )
            found.extend((target, child.lineno, function) for target in targets)
            visit(child, function)

    visit(ast.parse(path.read_text(), filename=str(path)), None)
    return found


GRAPH = {path.stem: internal_imports(path) for path in sorted(PACKAGE.glob("*.py"))}
# the page-making sub-package is one module of the graph: its files import each other freely
GRAPH["pages"] = [
    i for path in sorted((PACKAGE / "pages").glob("*.py")) for i in internal_imports(path)
]


def test_every_module_has_a_layer():
    assert not set(GRAPH) - set(LAYERS), (
        f"give these modules a layer: {sorted(set(GRAPH) - set(LAYERS))}"
    )


def test_imports_only_go_down():
    upward = [
        f"{module}.py:{line} ({LAYER_NAMES[LAYERS[module]]}) imports {target} "
        f"({LAYER_NAMES[LAYERS[target]]})"
        for module, imports in GRAPH.items()
        for target, line, _ in imports
        if LAYERS[target] > LAYERS[module]
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycles_even_through_imports_inside_functions():
    graph = {
        module: {target for target, _, _ in imports if target != module}
        for module, imports in GRAPH.items()
    }
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as error:
        raise AssertionError("import cycle: " + " -> ".join(reversed(error.args[1]))) from None


def test_internal_imports_are_at_the_top():
    inside = {
        (module, target, fn)
        for module, imports in GRAPH.items()
        for target, _, fn in imports
        if fn and module != IMPORTS_IN_HANDLERS
    }
    assert inside == FUNCTION_LEVEL_ALLOWED, (
        f"imports inside functions: {sorted(inside - FUNCTION_LEVEL_ALLOWED)}; "
        f"expected but gone: {sorted(FUNCTION_LEVEL_ALLOWED - inside)}"
    )


def test_commands_imports_chapters_in_its_handlers():
    at_top = {
        target for target, _, fn in GRAPH[IMPORTS_IN_HANDLERS] if fn is None and LAYERS[target] > 0
    }
    assert not at_top, (
        f"commands.py imports {sorted(at_top)} at the top: import a chapter in the handler that "
        "uses it, so that the other commands do not load it"
    )
    inside = {fn for _, _, fn in GRAPH[IMPORTS_IN_HANDLERS] if fn}
    assert "command_count" in inside, "the check looks at the wrong module"


def test_help_imports_no_torch():
    """`peft-course --help` builds the parser from `peft_course.settings` and loads no torch
    (measured: `peft-course finetune --help` 1.5 s, against 7.4 s when the parser imported the
    models)."""
    code = (
        "import sys; from peft_course.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('torch', 'transformers', 'peft', 'trl') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]", f"--help imported {result.stdout.strip()}"


def test_the_test_sees_function_level_imports(tmp_path):
    """A check of the checker: an import inside a function is found, with its function."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from peft_course import lora\n\ndef f():\n    from peft_course.demo import demo_rows\n"
    )
    assert internal_imports(sample) == [("lora", 1, None), ("demo", 4, "f")]
