"""The exercises' hints escalate, and the first two levels never hold code of the answer.

`exercises/hints.toml` gives every exercise function at least three hints. Level 1 names the
concept and a section of its chapter; level 2 says in words what to combine; only level 3 may
look like code. A level-1 or level-2 hint *leaks* when one of its code-like tokens (a call such
as `endswith(`, a dotted name such as `F.logsigmoid`, a subscript, arithmetic such as
`d_in + d_out`, a backticked span, or a bare API name such as `rpartition`) is code of the
reference answer in `solutions/`: an attribute, function or keyword the answer uses that the
exercise's own signature and docstrings do not already show, or a piece of one of the answer's
lines that the docstrings do not already write.
"""

from __future__ import annotations

import ast
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXERCISES, SOLUTIONS, DOCS = ROOT / "exercises", ROOT / "solutions", ROOT / "docs"
HINTS = tomllib.loads((EXERCISES / "hints.toml").read_text())
MODULES = sorted(
    p.stem for p in EXERCISES.glob("*.py") if not p.stem.startswith(("test_", "conftest"))
)

# Everyday words that are also the names of builtins or methods an answer calls: saying them in
# words is not code ("add up", "the mean", "split the text").
ENGLISH = frozenset(
    "abs all any append cat copy count dict exp float format get index int items join keys len "
    "diagonal list log lower max mean min range replace round set shape sort sorted split sqrt "
    "stack str strip sum symbols tuple update values view zip".split()
)
CODE_LIKE = re.compile(
    r"`[^`]+`"  # a backticked span
    r"|\.?[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+\(?"  # a dotted name, perhaps called: F.logsigmoid(
    r"|\.[A-Za-z_]\w*\(?"  # a method: .strip(
    r"|[A-Za-z_]\w*\("  # a call: endswith(
    r"|[A-Za-z_]\w*\[[^\]]*\]"  # a subscript: input_ids[:, 1:]
    r"|[\w.]+(?:\s*(?:\*\*|==|<=|>=|[-+*/@%<>])\s*[\w.]+)+"  # arithmetic: d_in + d_out
)
WORD = re.compile(r"[A-Za-z_]\w*")


@dataclass(frozen=True)
class Reference:
    """What a hint is compared with: the answer's code, and what the exercise already shows."""

    lines: tuple[str, ...]  # the answer's source lines, normalized (`squeeze`), no docstrings
    api: frozenset[str]  # attributes, called names and keywords the answer uses
    shown: frozenset[str]  # words of the stub's signature, docstrings and imports
    text: str  # the same, squeezed: a fragment the docstring itself writes is no leak


def squeeze(text: str) -> str:
    """Whitespace out, one kind of quote: code compared as written, whatever its spacing."""
    return re.sub(r"\s+", "", text).replace('"', "'")


def without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            if isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def api_names(tree: ast.AST) -> set[str]:
    """What the answer calls, reads and passes by keyword, without its own local names and
    without exception classes (saying "raise a ValueError" gives nothing away)."""
    local = {
        n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
    }
    local |= {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            names.add(node.func.id)
        elif isinstance(node, ast.keyword) and node.arg:
            names.add(node.arg)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.update(w for w in WORD.findall(node.value) if "_" in w or w.isupper())
    return {n for n in names - local if not n.endswith("Error")}


def reference(module: str, function: str) -> Reference:
    """The answer to `module.function`: its own code plus the module's private helpers
    (`_numbers`, the `_NUMBER` pattern), compared with what the stub shows the learner."""
    solution = ast.parse((SOLUTIONS / f"{module}.py").read_text())
    code = []
    for node in solution.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        name = getattr(node, "name", None) or ast.unparse(node).split("=")[0].strip()
        if name == function:  # its body: the signature is the exercise's own
            code.extend(without_docstrings(node).body)
        elif name.startswith("_"):
            code.append(without_docstrings(node))
    body = ast.Module(body=code, type_ignores=[])
    stub = ast.parse((EXERCISES / f"{module}.py").read_text())
    text = ast.get_docstring(stub) or ""
    shown = set()
    for node in stub.body:
        if isinstance(node, ast.FunctionDef) and node.name == function:
            text += ast.unparse(node.args) + ast.unparse(node.returns or "")
            text += ast.get_docstring(node) or ""
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            shown |= {alias.asname or alias.name.split(".")[0] for alias in node.names}
    shown |= set(WORD.findall(text))
    lines = tuple(squeeze(line) for line in ast.unparse(body).splitlines() if line.strip())
    return Reference(lines, frozenset(api_names(body)), frozenset(shown), squeeze(text))


def leaks(hint: str, answer: Reference) -> list[str]:
    """The code-like tokens of `hint` that are code of the answer, each with why."""
    secret = answer.api - answer.shown
    found = []
    for token in CODE_LIKE.findall(hint):
        core = token.strip("`").rstrip(".,;:")
        names = set(WORD.findall(core))
        piece = squeeze(core)
        line = next((line for line in answer.lines if piece in line), None)
        if WORD.fullmatch(core):  # a bare name in backticks: code only if the answer's API
            if core in secret:
                found.append(f"{token!r} names the answer's {core!r}")
        elif names & secret:
            found.append(f"{token!r} uses the answer's {sorted(names & secret)}")
        elif len(piece) >= 3 and line is not None and piece not in answer.text:
            found.append(f"{token!r} is a piece of the answer's line {line!r}")
    for word in sorted(set(WORD.findall(hint)) & secret - ENGLISH):
        found.append(f"the word {word!r} is an API name of the answer")
    return found


FUNCTIONS = [
    (module, name)
    for module in MODULES
    for name, node in (
        (n.name, n)
        for n in ast.parse((EXERCISES / f"{module}.py").read_text()).body
        if isinstance(n, ast.FunctionDef)
    )
    if not name.startswith("_")
]
IDS = [f"{m}.{f}" for m, f in FUNCTIONS]


def test_every_exercise_has_three_levels_and_no_hint_is_orphaned():
    missing = [
        f"{m}.{f}" for m, f in FUNCTIONS if len(HINTS.get(m, {}).get(f, {}).get("hints", [])) < 3
    ]
    assert not missing, f"exercises with fewer than three hints in exercises/hints.toml: {missing}"
    listed = {f"{m}.{f}" for m, functions in HINTS.items() for f in functions}
    orphans = sorted(listed - {f"{m}.{f}" for m, f in FUNCTIONS})
    assert not orphans, f"hints for functions no exercise has: {orphans}"


@pytest.mark.parametrize("module,function", FUNCTIONS, ids=IDS)
def test_levels_1_and_2_hold_no_code_of_the_answer(module, function):
    answer = reference(module, function)
    for level, hint in enumerate(HINTS[module][function]["hints"][:2], start=1):
        found = leaks(hint, answer)
        assert not found, f"{module}.{function}, hint {level} gives the answer away: {found}"


def headings(page: Path) -> set[str]:
    return {
        line.lstrip("#").strip() for line in page.read_text().splitlines() if line.startswith("#")
    }


@pytest.mark.parametrize("module,function", FUNCTIONS, ids=IDS)
def test_level_1_names_a_section_of_the_chapter(module, function):
    hint = HINTS[module][function]["hints"][0]
    where = re.search(r"\(docs/([\w-]+\.md) § (.+)\)\.?$", hint)
    assert where, f"{module}.{function}: hint 1 should end with (docs/<page>.md § <heading>)"
    page, heading = DOCS / where[1], where[2]
    assert page.is_file(), f"{module}.{function}: hint 1 names {page}, which does not exist"
    assert heading in headings(page), f"{module}.{function}: {page.name} has no heading {heading!r}"


# The hints these levels replaced: each gave the answer away, and the check must say so.
PLANTED = [
    ("lora", "matches", "any(name == t or name.endswith('.' + t) for t in targets)"),
    ("lora", "matches", "the name ends with the pattern (use endswith)"),
    (
        "lora",
        "inject_lora",
        "call model.requires_grad_(False), then for each name: parent_name, _, child = "
        "name.rpartition('.'); setattr(model.get_submodule(parent_name), child, LoRALayer(...))",
    ),
    ("lora", "inject_lora", "split each name at its last dot with rpartition"),
    (
        "dpo",
        "dpo_loss",
        "the loss is -F.logsigmoid(chosen_rewards - rejected_rewards).mean()",
    ),
    ("dpo", "sequence_logprobs", "take `input_ids[:, 1:]` as the targets"),
    ("warmup", "count_trainable_parameters", "add up p.numel() for every trainable p"),
    ("gpt2", "attention_mask", "start from a lower-triangular matrix (tril)"),
]


@pytest.mark.parametrize("module,function,hint", PLANTED, ids=[f"{m}.{f}" for m, f, _ in PLANTED])
def test_a_planted_leak_is_caught(module, function, hint):
    assert leaks(hint, reference(module, function)), f"{hint!r} was not seen as code"


def test_words_and_the_exercise_own_names_are_not_leaks():
    answer = reference("lora", "lora_forward")
    assert not leaks("the input through A, then B; `lora_A` is (r, in_features); add up", answer)
