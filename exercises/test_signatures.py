"""Meta-test: exercises/ and solutions/ offer the same modules with the same signatures."""

import inspect
from pathlib import Path

import pytest

EXERCISES = Path(__file__).resolve().parent
SOLUTIONS = EXERCISES.parent / "solutions"
MODULES = sorted(
    p.stem for p in EXERCISES.glob("*.py") if not p.stem.startswith(("test_", "conftest"))
)


def public_functions(module) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(obj)
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isfunction(obj) or inspect.isclass(obj))
        and getattr(obj, "__module__", None) == module.__name__
    }


def test_every_exercise_has_a_solution():
    missing = [m for m in MODULES if not (SOLUTIONS / f"{m}.py").is_file()]
    assert not missing, f"exercises without a reference solution: {missing}"


@pytest.mark.parametrize("name", MODULES)
def test_same_public_signatures(name, import_from):
    theirs = public_functions(import_from(EXERCISES, name))
    ours = public_functions(import_from(SOLUTIONS, name))
    assert theirs.keys() == ours.keys(), (
        f"{name}: functions differ: {sorted(theirs.keys() ^ ours.keys())}"
    )
    for function, signature in theirs.items():
        assert signature == ours[function], f"{name}.{function}: {signature} != {ours[function]}"
