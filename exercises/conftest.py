"""The autograder: `pytest exercises` grades your files, `pytest exercises --solutions` the answers.

Every test reaches the code it grades through one fixture, `load`, which imports a module
*by file path* from exactly one directory: `exercises/` (yours), `solutions/` (the reference)
or `--implementation-dir DIR`. It never falls back to another directory, so a test can't pass
on the reference while you think it graded your file.

Each check records which exercise functions it called. A check whose code raised
`NotImplementedError` counts as NOT DONE (not as a failure with a traceback) for the function
that raised it. The last thing printed is the summary per chapter (done, wrong, not done), after
the next exercise to do and its hint: level 1 by default, more with `--hint 2` or `--hint 3`
(the hints are in `exercises/hints.toml`).
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys
import textwrap
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest
import torch

from peft_course.system import quiet_library_noise

# --- quiet output ----------------------------------------------------------------------------
# Library noise, silenced here for the grader only (a learner's own scripts are left alone):
# bitsandbytes logs that an optional CPU kernel package is missing every time it is imported, and
# transformers and peft warn about their own future. The filters are also given to pytest (see
# pytest_configure), which resets the warning filters around every check.
QUIET_WARNINGS = (
    "ignore::FutureWarning",
    "ignore::DeprecationWarning",
    "ignore:fan_in_fan_out is set to False:UserWarning",  # peft, on GPT-2's Conv1D: handled
)
quiet_library_noise()
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # "Loading weights: 100%|####|"

# The graded models are tiny: one thread is faster than two and makes results independent of
# the machine's core count.
torch.set_num_threads(1)

EXERCISES = Path(__file__).resolve().parent
SOLUTIONS = EXERCISES.parent / "solutions"
HINTS = EXERCISES / "hints.toml"
# The chapters in the order the course teaches them (mkdocs.yml's nav): the next exercise to do is
# the first one, in this order and then in its file's order, that is not done or wrong.
CHAPTERS = (
    "warmup",
    "foundations",
    "prompting",
    "counting",
    "lora",
    "peft_family",
    "finetune",
    "qlora",
    "ablation",
    "dpo",
    "preference",
    "gpt2",
    "instruct",
    "real_model",
)


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
    group.addoption(
        "--hint",
        type=int,
        default=1,
        metavar="N",
        help="show hint level N for the next exercise: 1 the idea and where the chapter explains "
        "it (the default), 2 the shape of the answer in words, 3 close to code",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--hint") < 1:
        raise pytest.UsageError("--hint takes a level from 1 (the idea) to 3 (close to code)")
    for line in QUIET_WARNINGS:
        config.addinivalue_line("filterwarnings", line)
    try:
        from transformers.utils import logging as transformers_logging
    except ImportError:  # pragma: no cover - transformers is a dependency of the course
        return
    transformers_logging.disable_progress_bar()


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
    return lambda name: graded(import_from(directory, name), name)


# --8<-- [end:load]


# --- which functions a check grades ----------------------------------------------------------

_called: set[str] | None = None  # "lora.matches", ... read by the check running now


class GradedModule(ModuleType):
    """A graded module that notes each of its functions a check reads from it: the functions
    that check grades. Calls inside the module (your `inject_lora` calling your `matches`) go
    through its globals, not through here, so they are not noted."""

    def __getattribute__(self, name: str) -> object:
        value = super().__getattribute__(name)
        if _called is not None and not name.startswith("_") and inspect.isfunction(value):
            chapter = super().__getattribute__("__dict__").get("__chapter__")
            if chapter and value.__module__ == super().__getattribute__("__name__"):
                _called.add(f"{chapter}.{name}")
        return value


def graded(module: ModuleType, chapter: str) -> ModuleType:
    module.__chapter__ = chapter
    module.__class__ = GradedModule
    return module


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
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    global _called
    _called = set()
    try:
        yield
    finally:
        _called = None


def raised_by(excinfo: pytest.ExceptionInfo, directory: Path) -> str | None:
    """`lora.matches`: the graded function the exception came out of, innermost first."""
    for entry in reversed(excinfo.traceback):
        path = Path(str(entry.path))
        if path.parent == directory and not path.name.startswith(("test_", "conftest")):
            return f"{path.stem}.{entry.name}"
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" and not report.failed:
        return
    functions = sorted(_called or ())
    properties = [*report.user_properties, ("graded", functions)]
    if call.excinfo is not None and call.excinfo.errisinstance(NotImplementedError):
        where = raised_by(call.excinfo, implementation_dir(item.config))
        properties.append(("not_done", where or (functions[0] if functions else item.name)))
        report.longrepr = f"NOT DONE YET: {where or item.name}"
    report.user_properties = properties


def pytest_report_header(config: pytest.Config) -> str:
    return f"grading: {implementation_dir(config)}"


def not_done(report: pytest.TestReport) -> str | None:
    return dict(report.user_properties).get("not_done")


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config):
    """A check of a stub is neither passed nor failed: it is in a category of its own, so that
    pytest lists no traceback for it (the summary gives the hint instead); it still makes the
    exit status 1."""
    if report.when == "call" and not_done(report):
        return "not done", "N", ("NOT DONE", {"yellow": True})
    return None


# --- the summary -----------------------------------------------------------------------------


@dataclass
class Function:
    """What this run's checks found for one exercise function."""

    name: str  # "lora.matches"
    passed: int = 0
    wrong: int = 0
    not_done: int = 0

    @property
    def status(self) -> str:
        if self.not_done and not self.wrong:
            return "not done"
        return "wrong" if self.wrong else "done"


@dataclass
class Chapter:
    name: str
    functions: dict[str, Function] = field(default_factory=dict)
    checks: int = 0
    passed: int = 0

    def count(self, status: str) -> int:
        return sum(f.status == status for f in self.functions.values())


def function_order(directory: Path, chapter: str) -> list[str]:
    """The public functions of `chapter`'s file, in the order the file defines them."""
    path = directory / f"{chapter}.py"
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    names = [line[4:].split("(")[0] for line in lines if line.startswith("def ")]
    return [f"{chapter}.{name}" for name in names if not name.startswith("_")]


def tally(reports: list[pytest.TestReport]) -> dict[str, Chapter]:
    chapters: dict[str, Chapter] = {}
    for report in reports:
        chapter_name = Path(report.nodeid.split("::")[0]).stem.removeprefix("test_")
        chapter = chapters.setdefault(chapter_name, Chapter(chapter_name))
        chapter.checks += 1
        chapter.passed += report.passed
        graded = dict(report.user_properties).get("graded", [])
        missing = not_done(report)
        for name in {*graded, *([missing] if missing else [])}:
            if not name.startswith(f"{chapter_name}.") and name.split(".")[0] in CHAPTERS:
                owner = chapters.setdefault(name.split(".")[0], Chapter(name.split(".")[0]))
            else:
                owner = chapter
            function = owner.functions.setdefault(name, Function(name))
            if missing:
                function.not_done += 1
            elif report.failed:
                function.wrong += 1
            else:
                function.passed += 1
    return chapters


def hint(function: str, level: int) -> tuple[str, int, int]:
    """`(text, level shown, levels there are)` of `function`'s hint (`lora.matches`)."""
    chapter, name = function.split(".", 1)
    try:
        hints = tomllib.loads(HINTS.read_text())[chapter][name]["hints"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return f"read the docstring of {name} in exercises/{chapter}.py", 1, 1
    shown = min(level, len(hints))
    return hints[shown - 1], shown, len(hints)


def summary_lines(reports: list[pytest.TestReport], config: pytest.Config) -> list[str]:
    chapters = tally(reports)
    # the meta-checks (test_signatures.py) get a row only when one fails
    meta = [c for c in chapters if c not in CHAPTERS and chapters[c].passed < chapters[c].checks]
    order = [c for c in CHAPTERS if c in chapters] + sorted(meta)
    directory = implementation_dir(config)
    lines = []
    ranked = []
    for name in order:
        known = function_order(directory, name)
        functions = chapters[name].functions
        ranked += sorted(functions, key=lambda f: known.index(f) if f in known else len(known))
    todo = [f for f in ranked if chapters[f.split(".")[0]].functions[f].status != "done"]
    if todo:
        function = chapters[todo[0].split(".")[0]].functions[todo[0]]
        chapter, name = todo[0].split(".", 1)
        checks = function.passed + function.wrong + function.not_done
        state = (
            "not done yet"
            if function.status == "not done"
            else f"wrong: {function.wrong} of {checks} checks fail (their messages are above)"
        )
        text, level, levels = hint(todo[0], config.getoption("--hint"))
        lines.append(f"next: {todo[0]} in {shown_path(directory / f'{chapter}.py')}, {state}")
        lines += textwrap.wrap(
            text,
            width=100,
            initial_indent=f"  hint {level} of {levels}: ",
            subsequent_indent="    ",
            break_on_hyphens=False,
        )
        if level < levels:
            lines.append(f"  more: pytest exercises/test_{chapter}.py --hint {level + 1}")
    elif ranked:
        lines.append(f"every graded exercise is done ({len(ranked)} of {len(ranked)})")
    width = max([len(n) for n in order] + [len("total")])
    lines.append(f"{'chapter':<{width}}  done  wrong  not done  checks passed")
    totals = [0, 0, 0, 0, 0]
    for name in order:
        chapter = chapters[name]
        row = [chapter.count(s) for s in ("done", "wrong", "not done")]
        row += [chapter.passed, chapter.checks]
        totals = [a + b for a, b in zip(totals, row)]
        lines.append(table_row(name, width, row))
    lines.append(table_row("total", width, totals))
    return lines


def shown_path(path: Path) -> str:
    """`exercises/lora.py` when run from the course's root, the full path otherwise."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def table_row(name: str, width: int, row: list[int]) -> str:
    done, wrong, missing, passed, checks = row
    return f"{name:<{width}}  {done:>4}  {wrong:>5}  {missing:>8}  {passed:>6} of {checks}"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int):
    """Outermost, so that the summary comes after pytest's own last line ("3 passed in 2s")."""
    result = yield
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reports = [
            r
            for category in reporter.stats.values()
            for r in category
            if isinstance(r, pytest.TestReport) and (r.when == "call" or r.failed)
        ]
        if reports:
            reporter.write_sep("=", "exercises")
            for line in summary_lines(reports, session.config):
                reporter.write_line(line)
    return result
