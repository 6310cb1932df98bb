"""Arithmetic word problems whose answers are computed, never typed in.

Each generated problem is written from a template: a question with blanks, the equation the
question describes, and the letter it solves for. The numbers are drawn under a seed, and
the gold answer is what `sympy` finds when it solves the filled-in equation, so a wrong
answer in the data would need a wrong equation, which the tests check by substitution. The
worked solution shown in chain-of-thought prompts is derived from the same equation.

GSM8K-format files (JSON lines with `question` and an `answer` ending in `#### N`) load into
the same `Problem` type, so every prompting strategy runs on either source.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import sympy

from peft_course.errors import CourseError, check_int


class ProblemError(CourseError):
    """A malformed problem: a bad equation, a template bug, or a bad row in a JSONL file."""


@dataclass(frozen=True)
class Problem:
    """One question and its gold answer (exact), with a worked solution where one exists.

    `equation` and `unknown` are set for generated problems (the answer is the equation's
    solution for `unknown`); GSM8K rows carry their reference solution in `reasoning` instead.

    Attributes:
        question: the question as the model reads it.
        answer: the gold answer, exact.
        reasoning: the worked solution; empty when there is none.
        equation: the filled-in equation `lhs = rhs`; None for a GSM8K row.
        unknown: the letter the equation is solved for; None for a GSM8K row.
        kind: the template's name for a generated problem, `gsm8k` for a GSM8K row.
    """

    question: str
    answer: Fraction
    reasoning: str = ""
    equation: str | None = None
    unknown: str | None = None
    kind: str = "gsm8k"

    def to_dict(self) -> dict[str, str | None]:
        """A JSON-friendly view (the answer as a decimal or `a/b` string)."""
        return {
            "question": self.question,
            "answer": format_number(self.answer),
            "reasoning": self.reasoning,
            "equation": self.equation,
            "unknown": self.unknown,
            "kind": self.kind,
        }


def format_number(value: Fraction | int) -> str:
    """`4`, `4.5`, `-0.25` for terminating decimals, `2/3` otherwise (exact, no float rounding).

    Args:
        value: the number to show.
    """
    value = Fraction(value)
    if value.denominator == 1:
        return str(value.numerator)
    denominator, twos, fives = value.denominator, 0, 0
    while denominator % 2 == 0:
        denominator, twos = denominator // 2, twos + 1
    while denominator % 5 == 0:
        denominator, fives = denominator // 5, fives + 1
    if denominator != 1:
        return f"{value.numerator}/{value.denominator}"
    places = max(twos, fives)
    scaled = abs(value) * 10**places  # an integer, since 10**places clears the denominator
    digits = str(int(scaled)).rjust(places + 1, "0")
    sign = "-" if value < 0 else ""
    return f"{sign}{digits[:-places]}.{digits[-places:]}"


# --8<-- [start:solve]
def solve_equation(equation: str, unknown: str) -> Fraction:
    """Solve `"lhs = rhs"` for `unknown` with sympy; the one positive rational root.

    Decimals in the equation are read as exact rationals (`0.2` is 1/5, not a float). The
    unknown is declared positive (a price, a time, a width), which also discards the
    negative root of a quadratic. Anything other than exactly one such root is an error.

    Args:
        equation: the equation, such as `15*p + 10*(p + 0.2) = 102`.
        unknown: the letter to solve for.

    Raises:
        ProblemError: if `equation` has no single `=`, sympy cannot read it, or it has not
            exactly one positive rational solution.
    """
    if equation.count("=") != 1:
        raise ProblemError(f"'{equation}' is not an equation of the form 'lhs = rhs'")
    symbol = sympy.Symbol(unknown, positive=True)
    try:
        lhs, rhs = (
            sympy.sympify(side, rational=True, locals={unknown: symbol})
            for side in equation.split("=")
        )
    except (sympy.SympifyError, SyntaxError, TypeError) as error:
        raise ProblemError(f"sympy cannot read '{equation}': {error}") from error
    roots = sympy.solve(sympy.Eq(lhs, rhs), symbol)
    if len(roots) != 1 or not roots[0].is_rational:
        raise ProblemError(
            f"'{equation}' has {roots} as positive solutions for {unknown}, not one rational"
        )
    return Fraction(int(roots[0].p), int(roots[0].q))


# --8<-- [end:solve]


def pretty(equation: str) -> str:
    """`15*p + 10*(p + 0.2)` as a person writes it: `15p + 10(p + 0.2)`; `w**2` as `w^2`.

    Args:
        equation: an equation or expression in sympy's notation.
    """
    return re.sub(r"([\w)])\*([a-z(])", r"\1\2", equation).replace("**", "^")


def _coefficient(value: Fraction) -> str:
    """A coefficient in front of a letter: nothing for 1, brackets around `2/3`."""
    if value == 1:
        return ""
    text = format_number(value)
    return f"({text})" if "/" in text else text


def worked_steps(equation: str, unknown: str) -> str:
    """The algebra from the equation to the answer, as sentences derived from sympy.

    A linear equation is collected into `a x = b`; a quadratic is set to zero and its
    positive root taken. This is the "reasoning" a chain-of-thought example shows.

    Args:
        equation: the equation `lhs = rhs`.
        unknown: the letter to solve for.
    """
    answer = solve_equation(equation, unknown)
    symbol = sympy.Symbol(unknown)
    lhs, rhs = (
        sympy.sympify(side, rational=True, locals={unknown: symbol}) for side in equation.split("=")
    )
    polynomial = sympy.Poly(sympy.expand(lhs - rhs), symbol)
    shown = f"{unknown} = {format_number(answer)}"
    if polynomial.degree() == 1:
        a, b = (Fraction(int(c.p), int(c.q)) for c in polynomial.all_coeffs())
        if a < 0:
            a, b = -a, -b
        if a == 1:
            return f"Collecting the terms gives {shown}."
        return (
            f"Collecting the terms gives {_coefficient(a)}{unknown} "
            f"= {format_number(-b)}, so {shown}."
        )
    roots = sorted(sympy.solve(polynomial.as_expr(), symbol), key=lambda r: float(r))
    listed = " and ".join(sympy.sstr(r) for r in roots)
    return (
        f"Expanding gives {pretty(sympy.sstr(polynomial.as_expr()))} = 0, with roots {listed}. "
        f"Only a positive value makes sense, so {shown}."
    )


# --8<-- [start:template]
@dataclass(frozen=True)
class ProblemTemplate:
    """A kind of word problem: blanks to fill, the equation they describe, and how to draw them.

    `question`, `equation` and `setup` are `str.format` strings over the values `draw`
    returns.

    Attributes:
        kind: the template's name, which its problems carry.
        unknown: the letter the equation is solved for.
        question: the question with blanks.
        equation: the equation `lhs = rhs` with blanks.
        setup: the first sentence of the worked solution (it names the unknown and states the
            equation); the algebra after it is derived from the equation.
        draw: draws the blanks' values from a random source.
    """

    kind: str
    unknown: str
    question: str
    equation: str
    setup: str
    draw: Callable[[random.Random], dict[str, object]] = field(repr=False)

    def make(self, **values: object) -> Problem:
        """The problem for these values, its answer solved by sympy from the equation.

        Args:
            **values: the blanks' values by name (a `Fraction` is shown as `format_number` does).

        Raises:
            ProblemError: if a blank has no value.
        """
        shown = {
            name: format_number(v) if isinstance(v, Fraction) else v for name, v in values.items()
        }
        try:
            question = self.question.format(**shown)
            equation = self.equation.format(**shown)
            setup = self.setup.format(**shown)
        except KeyError as missing:
            raise ProblemError(f"template '{self.kind}' needs the value {missing}") from None
        answer = solve_equation(equation, self.unknown)
        reasoning = f"{setup} {pretty(equation)}. {worked_steps(equation, self.unknown)}"
        return Problem(question, answer, reasoning, equation, self.unknown, self.kind)


# --8<-- [end:template]


def money(value: Fraction) -> str:
    """An amount of dollars as written on a receipt: `102` or `141.80`.

    Args:
        value: the amount in dollars.
    """
    return format_number(value) if value.denominator == 1 else f"{float(value):.2f}"


def _half(rng: random.Random, low: int, high: int) -> Fraction:
    """A random multiple of 0.5 in [low, high]."""
    return Fraction(rng.randint(2 * low, 2 * high), 2)


def _draw_price(rng: random.Random) -> dict[str, object]:
    """The blanks of a `price` problem."""
    a, b, cents, price = (
        rng.randint(5, 20),
        rng.randint(5, 20),
        rng.choice(range(10, 100, 10)),
        _half(rng, 2, 8),
    )
    item = rng.choice(["apples", "rice", "coffee beans", "cheese", "flour"])
    return {
        "a": a,
        "b": b,
        "cents": cents,
        "cents_dollars": Fraction(cents, 100),
        "item": item,
        "total": money(a * price + b * (price + Fraction(cents, 100))),
    }


def _draw_meeting(rng: random.Random) -> dict[str, object]:
    """The blanks of a `meeting` problem."""
    u, v, hours = rng.randint(8, 25), rng.randint(8, 25), _half(rng, 1, 4)
    return {"u": u, "v": v, "distance": (u + v) * hours}


def _draw_mixture(rng: random.Random) -> dict[str, object]:
    """The blanks of a `mixture` problem."""
    while True:  # redraw until the target strength is a whole percentage
        weak, strong = rng.choice([5, 10, 15, 20]), rng.choice([30, 40, 50, 60])
        litres, added = rng.randint(2, 20), rng.randint(2, 20)
        target = Fraction(strong * added + weak * litres, added + litres)
        if target.denominator == 1:
            return {
                "weak": weak,
                "strong": strong,
                "litres": litres,
                "target": target,
                "weak_share": Fraction(weak, 100),
                "strong_share": Fraction(strong, 100),
                "target_share": target / 100,
            }


def _draw_ages(rng: random.Random) -> dict[str, object]:
    """The blanks of an `ages` problem."""
    while True:  # redraw until the later ratio is a whole number
        son, now, years = rng.randint(3, 15), rng.randint(3, 7), rng.randint(2, 20)
        later = Fraction(now * son + years, son + years)
        if later.denominator == 1 and later > 1 and now * son < 70:
            return {"now": now, "years": years, "later": later}


def _draw_discount(rng: random.Random) -> dict[str, object]:
    """The blanks of a `discount` problem."""
    original, percent = 4 * rng.randint(5, 50), rng.choice([10, 15, 20, 25, 30, 40, 50])
    item = rng.choice(["jacket", "lamp", "bicycle", "kettle", "backpack"])
    return {
        "item": item,
        "percent": percent,
        "share": Fraction(percent, 100),
        "price": money(original * Fraction(100 - percent, 100)),
    }


def _draw_average(rng: random.Random) -> dict[str, object]:
    """The blanks of an `average` problem."""
    while True:  # redraw until the target average is a whole number
        scores = [rng.randint(55, 100) for _ in range(4)]
        if sum(scores) % 4 == 0:
            return {"a": scores[0], "b": scores[1], "c": scores[2], "mean": sum(scores) // 4}


def _draw_pipes(rng: random.Random) -> dict[str, object]:
    """The blanks of a `pipes` problem."""
    while True:  # redraw until together they take a whole or half number of hours
        a, b = sorted(rng.sample(range(2, 31), 2))
        if (2 * Fraction(a * b, a + b)).denominator == 1:
            return {"a": a, "b": b}


def _draw_garden(rng: random.Random) -> dict[str, object]:
    """The blanks of a `garden` problem."""
    width, longer = rng.randint(3, 20), rng.randint(1, 10)
    return {"longer": longer, "area": width * (width + longer)}


def _draw_sharing(rng: random.Random) -> dict[str, object]:
    """The blanks of a `sharing` problem."""
    ben, times, extra = rng.randint(5, 60), rng.randint(2, 4), rng.randint(1, 20)
    return {"times": times, "extra": extra, "total": ben + times * ben + extra}


TEMPLATES: dict[str, ProblemTemplate] = {
    t.kind: t
    for t in [
        ProblemTemplate(
            "price",
            "p",
            "Last month I bought {a} kg of {item}. This month I bought {b} kg, but the price per "
            "kilogram was {cents} cents higher. I paid ${total} for both together. What was last "
            "month's price per kilogram, in dollars?",
            "{a}*p + {b}*(p + {cents_dollars}) = {total}",
            "Let p be last month's price per kilogram in dollars. Last month cost {a}p and this "
            "month cost {b}(p + {cents_dollars}), so",
            _draw_price,
        ),
        ProblemTemplate(
            "meeting",
            "t",
            "Two towns are {distance} km apart. At noon a cyclist leaves one town at {u} km/h and "
            "another leaves the other town at {v} km/h, riding towards each other. After how many "
            "hours do they meet?",
            "{u}*t + {v}*t = {distance}",
            "Let t be the time in hours. Together they cover {u}t + {v}t km, so",
            _draw_meeting,
        ),
        ProblemTemplate(
            "mixture",
            "v",
            "How many litres of a {strong}% salt solution must be added to {litres} litres of a "
            "{weak}% salt solution to make a {target}% salt solution?",
            "{strong_share}*v + {weak_share}*{litres} = {target_share}*(v + {litres})",
            "Let v be the litres added. The salt before and after mixing is the same, so",
            _draw_mixture,
        ),
        ProblemTemplate(
            "ages",
            "s",
            "A mother is {now} times as old as her son. In {years} years she will be {later} times "
            "as old as he will be. How old is the son now?",
            "{now}*s + {years} = {later}*(s + {years})",
            "Let s be the son's age now. In {years} years the mother will be {now}s + {years} "
            "and her son s + {years}, so",
            _draw_ages,
        ),
        ProblemTemplate(
            "discount",
            "x",
            "After a {percent}% discount a {item} costs ${price}. What was its price before the "
            "discount, in dollars?",
            "(1 - {share})*x = {price}",
            "Let x be the price before the discount. Paying {percent}% less means",
            _draw_discount,
        ),
        ProblemTemplate(
            "average",
            "x",
            "My scores on three tests were {a}, {b} and {c}. What score do I need on the fourth "
            "test to average {mean} over all four tests?",
            "({a} + {b} + {c} + x)/4 = {mean}",
            "Let x be the fourth score. The average of the four scores is",
            _draw_average,
        ),
        ProblemTemplate(
            "pipes",
            "t",
            "One pipe fills a tank in {a} hours and a second pipe fills it in {b} hours. How many "
            "hours do the two pipes take to fill the tank together?",
            "t/{a} + t/{b} = 1",
            "Let t be the time in hours. Each hour the pipes fill 1/{a} and 1/{b} of the tank, so",
            _draw_pipes,
        ),
        ProblemTemplate(
            "garden",
            "w",
            "A rectangular garden is {longer} m longer than it is wide, and its area is {area} "
            "square metres. How wide is it, in metres?",
            "w*(w + {longer}) = {area}",
            "Let w be the width in metres. The length is w + {longer}, so",
            _draw_garden,
        ),
        ProblemTemplate(
            "sharing",
            "b",
            "Ann and Ben share ${total}. Ann gets {times} times as much as Ben plus ${extra}. How "
            "many dollars does Ben get?",
            "b + {times}*b + {extra} = {total}",
            "Let b be Ben's share. Ann gets {times}b + {extra}, so",
            _draw_sharing,
        ),
    ]
}

# The worked example of the one-shot chain-of-thought prompt: 15p + 10(p + 0.2) = 102, p = 4.
PRICE_EXAMPLE = TEMPLATES["price"].make(
    a=15, b=10, cents=20, cents_dollars=Fraction(1, 5), item="apples", total=102
)


# --8<-- [start:generate]
MAX_MISSES = 1000  # draws without a new problem before a template counts as exhausted


def generate_problems(n: int, seed: int = 0, kinds: Iterable[str] | None = None) -> list[Problem]:
    """`n` distinct problems, cycling through `kinds` (default: every template), seeded.

    Args:
        n: how many problems.
        seed: seeds the values drawn.
        kinds: template names from `TEMPLATES`; None: every template.

    Raises:
        ProblemError: if `kinds` is a string, empty or names an unknown kind, `n` is not a
            whole number of at least 0, or `n` distinct problems cannot be drawn.
    """
    if isinstance(kinds, str):
        raise ProblemError(f"kinds must be a list of problem kinds, got the string {kinds!r}")
    kinds = list(TEMPLATES if kinds is None else kinds)
    unknown = [k for k in kinds if k not in TEMPLATES]
    if unknown or not kinds:
        raise ProblemError(f"unknown problem kind(s) {unknown}; known: {sorted(TEMPLATES)}")
    try:
        check_int("the number of problems", n, minimum=0)
    except CourseError as error:
        raise ProblemError(str(error)) from None
    rng = random.Random(seed)
    problems: list[Problem] = []
    seen: set[str] = set()
    misses = 0  # draws in a row that gave no new problem: a template that has run out
    while len(problems) < n:
        kind = kinds[len(problems) % len(kinds)]
        problem = TEMPLATES[kind].make(**TEMPLATES[kind].draw(rng))
        if problem.question in seen:
            misses += 1
            if misses > MAX_MISSES:
                raise ProblemError(
                    f"cannot draw {n} distinct problems: the {kind!r} template has no new one "
                    f"after {len(problems)} problems (its numbers repeat); ask for at most "
                    f"{len(problems)}, or give a GSM8K-format file"
                )
            continue
        misses = 0
        seen.add(problem.question)
        problems.append(problem)
    return problems


# --8<-- [end:generate]


def parse_number(text: str) -> Fraction:
    """Read `1,234`, `-4.50` or `3/4` exactly; a `ProblemError` for anything else.

    Args:
        text: the number as written; commas and `$` signs are ignored.

    Raises:
        ProblemError: if `text` is not a number.
    """
    cleaned = text.strip().replace(",", "").replace("$", "")
    try:
        return Fraction(cleaned)
    except (ValueError, ZeroDivisionError):
        raise ProblemError(f"'{text}' is not a number") from None


_CALCULATOR = re.compile(r"<<[^>]*>>")  # GSM8K's calculator annotations: 2+1=<<2+1=3>>3


def gsm8k_problem(row: object, where: str = "row") -> Problem:
    """One GSM8K record `{"question", "answer": "... #### N"}` as a `Problem`.

    Args:
        row: one parsed JSON record.
        where: where the record is (such as `file:line`), for the messages.

    Raises:
        ProblemError: if `row` is not an object, lacks a text `question` or `answer`, or its
            answer does not end in `#### N` with a number.
    """
    if not isinstance(row, dict):
        raise ProblemError(f"{where}: expected a JSON object, got {type(row).__name__}")
    missing = [key for key in ("question", "answer") if not isinstance(row.get(key), str)]
    if missing:
        raise ProblemError(
            f"{where}: missing or non-text field(s) {missing}; the keys are {sorted(row)}"
        )
    solution, marker, final = row["answer"].rpartition("####")
    if not marker:
        raise ProblemError(f"{where}: the answer does not end in '#### N': {row['answer'][-60:]!r}")
    try:
        answer = parse_number(final)
    except ProblemError:
        raise ProblemError(
            f"{where}: the final answer {final.strip()!r} after '####' is not a number"
        ) from None
    reasoning = " ".join(_CALCULATOR.sub("", solution).split())
    return Problem(row["question"].strip(), answer, reasoning, kind="gsm8k")


def load_gsm8k_jsonl(path: str | Path, limit: int | None = None) -> list[Problem]:
    """Read a GSM8K-format JSON Lines file; a malformed line is an error naming its number.

    Args:
        path: the JSON Lines file; blank lines are skipped.
        limit: read at most this many problems; None reads them all.

    Raises:
        ProblemError: if the file is missing, a directory or not UTF-8, `limit` is not a
            positive integer, a line is not valid JSON, or the file holds no problems.
    """
    path = Path(path)
    if path.is_dir():
        raise ProblemError(f"cannot read '{path}': it is a directory, not a file")
    if not path.is_file():
        raise ProblemError(f"cannot read '{path}': no such file")
    if limit is not None:
        try:
            check_int("the number of problems to read", limit, minimum=1)
        except CourseError as error:
            raise ProblemError(str(error)) from None
    problems: list[Problem] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise ProblemError(
            f"cannot read '{path}': not UTF-8 text ({error.reason} at byte {error.start})"
        ) from None
    for number, line in enumerate(lines, start=1):
        if limit is not None and len(problems) >= limit:
            break
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ProblemError(f"{where}: not valid JSON ({error.msg})") from None
        problems.append(gsm8k_problem(row, where))
    if not problems:
        raise ProblemError(f"'{path}' holds no problems")
    return problems
