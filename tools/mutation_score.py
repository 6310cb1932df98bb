"""The exercises' kill rate: how many plausible single mistakes in `solutions/` the graders catch.

`make mutants` runs mutmut over `solutions/` (each mutant graded by `pytest exercises
--solutions`), then this script reads mutmut's results, sets aside the equivalent mutants
listed below (each with the reason it cannot be told apart from the reference), prints the
numbers and the survivors, and exits 1 when fewer than 95% of the rest were killed.

An equivalent mutant is matched by its function and the line it changes, not by mutmut's
number, so the list survives edits elsewhere in a file.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass

BAR = 0.95


@dataclass(frozen=True)
class Equivalent:
    function: str  # "module.function" under solutions/
    before: str  # the reference line, stripped
    after: str  # the mutated line, stripped
    why: str


_MESSAGE = (
    "same exception type and the same information; only the message's wording or case differs"
)
_BOOL_TARGET = (
    "the identity is written into a bool tensor, which turns a float 1.0 into True all the same"
)
_ASSUMPTION = (
    "the symbols' assumptions change what sympy may simplify, never the formula's value at any "
    "(r, d_model, n_layer), which is the contract"
)

EQUIVALENT = [
    Equivalent(
        "ablation.mean_std",
        'raise ValueError("no values")',
        'raise ValueError("XXno valuesXX")',
        _MESSAGE,
    ),
    Equivalent(
        "ablation.mean_std",
        'raise ValueError("no values")',
        'raise ValueError("NO VALUES")',
        _MESSAGE,
    ),
    Equivalent(
        "finetune.best_evaluation",
        'raise ValueError("the history is empty")',
        'raise ValueError("XXthe history is emptyXX")',
        _MESSAGE,
    ),
    Equivalent(
        "finetune.best_evaluation",
        'raise ValueError("the history is empty")',
        'raise ValueError("THE HISTORY IS EMPTY")',
        _MESSAGE,
    ),
    Equivalent(
        "dpo.sequence_logprobs",
        "return (token_logps * completion_mask[:, 1:]).sum(dim=-1)",
        "return (token_logps * completion_mask[:, 1:]).sum(dim=+1)",
        "the per-token log-probabilities are 2-D (batch, length): dim 1 is dim -1",
    ),
    Equivalent(
        "gpt2.attention_mask",
        "own[:, keys - queries :] = torch.eye(queries, dtype=torch.bool)",
        "own[:, keys - queries :] = torch.eye(queries, dtype=None)",
        _BOOL_TARGET,
    ),
    Equivalent(
        "gpt2.attention_mask",
        "own[:, keys - queries :] = torch.eye(queries, dtype=torch.bool)",
        "own[:, keys - queries :] = torch.eye(queries, )",
        _BOOL_TARGET,
    ),
    Equivalent(
        "gpt2.top_p_filter",
        "ascending, order = torch.sort(logits, dim=-1)",
        "ascending, order = torch.sort(logits, )",
        "torch.sort sorts along dim=-1 by default",
    ),
    Equivalent(
        "gpt2.top_p_filter",
        'return logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))',
        'return logits.masked_fill(drop.scatter(-1, order, drop), float("-INF"))',
        'float() reads "-INF" as minus infinity too',
    ),
    Equivalent(
        "instruct.exact_match",
        'return " ".join(text.lower().split()).removesuffix(".").strip()',
        'return " ".join(text.upper().split()).removesuffix(".").strip()',
        "both sides are folded to the same case, upper or lower: the comparison is the same",
    ),
] + [
    Equivalent(
        "counting.gpt2_lora_formula",
        'r, d, n = sp.symbols("r d_model n_layer", integer=True, positive=True)',
        after,
        _ASSUMPTION,
    )
    for after in [
        'r, d, n = sp.symbols("r d_model n_layer", integer=None, positive=True)',
        'r, d, n = sp.symbols("r d_model n_layer", integer=True, positive=None)',
        'r, d, n = sp.symbols("r d_model n_layer", positive=True)',
        'r, d, n = sp.symbols("r d_model n_layer", integer=True, )',
        'r, d, n = sp.symbols("r d_model n_layer", integer=False, positive=True)',
        'r, d, n = sp.symbols("r d_model n_layer", integer=True, positive=False)',
    ]
]


def mutmut(*arguments: str) -> str:
    return subprocess.run(["mutmut", *arguments], check=True, capture_output=True, text=True).stdout


def results() -> dict[str, str]:
    """mutant name -> status ("killed", "survived", "timeout", ...), for every mutant."""
    found = re.findall(
        r"^\s*(solutions\.\S+): (.+)$", mutmut("results", "--all", "true"), re.MULTILINE
    )
    return {name: status.strip() for name, status in found}


def change(name: str) -> tuple[str, str]:
    """The (reference line, mutated line) of a mutant, stripped, from `mutmut show`."""
    diff = mutmut("show", name).splitlines()
    before = [
        line[1:].strip() for line in diff if line.startswith("-") and not line.startswith("---")
    ]
    after = [
        line[1:].strip() for line in diff if line.startswith("+") and not line.startswith("+++")
    ]
    return " / ".join(before), " / ".join(after)


def function_of(name: str) -> str:
    """`solutions.ablation.x_mean_std__mutmut_3` -> `ablation.mean_std`."""
    module, mangled = name.removeprefix("solutions.").rsplit(".", 1)
    return f"{module}.{mangled.removeprefix('x_').rsplit('__mutmut_', 1)[0]}"


def main() -> int:
    statuses = results()
    if not statuses:
        print("no mutants found: run `mutmut run` first (make mutants does both)")
        return 2
    survived, equivalent = [], []
    for name, status in sorted(statuses.items()):
        if status == "killed":
            continue
        before, after = change(name)
        match = next(
            (
                e
                for e in EQUIVALENT
                if (e.function, e.before, e.after) == (function_of(name), before, after)
            ),
            None,
        )
        (equivalent if match and status == "survived" else survived).append(
            (name, status, before, after, match)
        )
    killed = sum(status == "killed" for status in statuses.values())
    graded = len(statuses) - len(equivalent)
    rate = killed / graded
    print(
        f"generated {len(statuses)}, killed {killed}, survived {len(survived)}, "
        f"excluded as equivalent {len(equivalent)}: kill "
        f"rate {killed}/{graded} = {rate:.1%} (bar {BAR:.0%})"
    )
    for name, _, before, after, match in equivalent:
        print(f"  equivalent {name}: {before!r} -> {after!r}: {match.why}")
    for name, status, before, after, _ in survived:
        print(f"  {status} {name}: {before!r} -> {after!r}")
    return 0 if rate >= BAR else 1


if __name__ == "__main__":
    sys.exit(main())
