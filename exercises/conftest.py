"""The autograder: `pytest exercises` grades your files, `pytest exercises --solutions` the answers.

Every test reaches the code it grades through one fixture, `load`, which imports a module
*by file path* from exactly one directory: `exercises/` (yours), `solutions/` (the reference)
or `--implementation-dir DIR`. It never falls back to another directory, so a test can't pass
on the reference while you think it graded your file.

An exercise you have not done yet raises `NotImplementedError("hint")`; it is reported as
"NOT DONE YET" with its hint instead of a traceback.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch

# The graded models are tiny: one thread is faster than two and makes results independent of
# the machine's core count.
torch.set_num_threads(1)

EXERCISES = Path(__file__).resolve().parent
SOLUTIONS = EXERCISES.parent / "solutions"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("peft_course autograder")
    group.addoption(
        "--solutions",
        action="store_true",
        help="grade the reference answers in solutions/ instead of your files in exercises/",
    )
    group.addoption(
        "--implementation-dir",
        default=None,
        help="grade the modules in this directory instead (same file names)",
    )


def implementation_dir(config: pytest.Config) -> Path:
    """The one directory whose modules are graded in this run."""
    chosen = config.getoption("--implementation-dir")
    if chosen:
        return Path(chosen).resolve()
    return SOLUTIONS if config.getoption("--solutions") else EXERCISES


def module_name_for(directory: Path, name: str) -> str:
    """`solutions.lora`, `exercises.lora`: the dotted name of the file, as a mutation-testing
    tool names it; a directory given with `--implementation-dir` gets a name of its own."""
    if directory in (EXERCISES, SOLUTIONS):
        return f"{directory.name}.{name}"
    return f"_graded_{abs(hash(str(directory)))}_{name}"


def import_from(directory: Path, name: str) -> ModuleType:
    """Import `directory/name.py` under a name of its own (never a cached sibling)."""
    path = directory / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(f"the autograder looked for {path} and found nothing")
    module_name = module_name_for(directory, name)
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    assert Path(module.__file__).resolve().parent == directory, "graded the wrong file"
    return module


@pytest.fixture(scope="session", name="import_from")
def import_from_fixture() -> Callable[[Path, str], ModuleType]:
    """`import_from(directory, name)`, for the meta-test that compares both directories."""
    return import_from


# --8<-- [start:load]
@pytest.fixture(scope="session")
def load(request: pytest.FixtureRequest) -> Callable[[str], ModuleType]:
    """`load("warmup")` returns the graded `warmup` module from the chosen directory."""
    directory = implementation_dir(request.config)
    return lambda name: import_from(directory, name)


# --8<-- [end:load]


_EXACT = (
    int,
    float,
    bool,
    str,
    list,
    tuple,
    dict,
)  # builtins whose look-alike subclasses don't count


def check_returns(value: object, expected: type | tuple[type, ...], what: str) -> None:
    """Fail, naming `what`, unless `value` is exactly of the promised type.

    `numpy.int64(3) == 3` and `tensor([1, 2]).tolist() == [1, 2]`, so comparing values alone
    would accept a type the docstring does not promise; `bool` is not accepted for `int`.
    """
    kinds = expected if isinstance(expected, tuple) else (expected,)
    got = type(value)
    assert got in kinds or any(k not in _EXACT and issubclass(got, k) for k in kinds), (
        f"{what} must return {' or '.join(k.__name__ for k in kinds)} (its docstring promises it), "
        f"got {got.__module__}.{got.__qualname__}".replace("builtins.", "")
    )


@pytest.fixture(scope="session", name="returns")
def returns_fixture() -> Callable[[object, type | tuple[type, ...], str], None]:
    """`returns(value, int, "lora_count")`: the result has the promised type, not a look-alike."""
    return check_returns


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if call.excinfo is not None and call.excinfo.errisinstance(NotImplementedError):
        hint = str(call.excinfo.value) or "fill in the function"
        report.longrepr = f"NOT DONE YET: {item.name}\n  hint: {hint}"
        report.user_properties.append(("not_done", True))


def pytest_report_header(config: pytest.Config) -> str:
    return f"grading: {implementation_dir(config)}"


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    failed = terminalreporter.stats.get("failed", [])
    not_done = [r for r in failed if ("not_done", True) in r.user_properties]
    passed = len(terminalreporter.stats.get("passed", []))
    terminalreporter.write_sep("=", "exercises")
    terminalreporter.write_line(
        f"{passed} checks passed, {len(failed) - len(not_done)} wrong, {len(not_done)} not done yet"
    )
