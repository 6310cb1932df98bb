"""Prompt builders, computed word problems, answer extraction, the harness and the verbalizer."""

from __future__ import annotations

import json
import random
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
import sympy
import torch

from peft_course.models import load_model
from peft_course.prompting import (
    STRATEGIES,
    HFGenerate,
    PromptTemplate,
    balanced_examples,
    build_prompt,
    chain_of_thought_prompt,
    cut_completion,
    evaluate_prompting,
    example_pool,
    extract_answer,
    few_shot_prompt,
    label_word_ids,
    prompt_gallery,
    sentiment_prompt,
    verbalizer_accuracy,
    verbalizer_scores,
    zero_shot_cot_prompt,
    zero_shot_prompt,
)
from peft_course.word_problems import (
    PRICE_EXAMPLE,
    TEMPLATES,
    Problem,
    ProblemError,
    format_number,
    generate_problems,
    load_gsm8k_jsonl,
    solve_equation,
)
from peft_course.tolerances import LOGPROB_ATOL, PREFIX_CACHE_ATOL

DOCS_RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
EXAMPLES = [
    Problem("What is 2 + 3?", Fraction(5), "Adding gives 5."),
    Problem("What is half of 9?", Fraction(9, 2), "9 / 2 = 4.5."),
    Problem("What is 7 - 10?", Fraction(-3), "7 - 10 = -3."),
]


# --- prompt builders ------------------------------------------------------------------


def test_zero_shot_prompt_text():
    assert zero_shot_prompt("How many legs do 3 cats have?") == (
        "Answer each question with a number.\n\nQ: How many legs do 3 cats have?\nA:"
    )


def test_few_shot_prompt_text_uses_the_first_k_examples():
    assert few_shot_prompt("What is 1 + 1?", EXAMPLES, k=2) == (
        "Answer each question with a number.\n\n"
        "Q: What is 2 + 3?\nA: The answer is 5.\n\n"
        "Q: What is half of 9?\nA: The answer is 4.5.\n\n"
        "Q: What is 1 + 1?\nA:"
    )


def test_one_shot_chain_of_thought_shows_the_worked_price_example():
    assert chain_of_thought_prompt("What is 1 + 1?") == (
        "Solve each problem step by step, then give the answer.\n\n"
        "Q: Last month I bought 15 kg of apples. This month I bought 10 kg, but the price per "
        "kilogram was 20 cents higher. I paid $102 for both together. What was last month's price "
        "per kilogram, in dollars?\n"
        "A: Let p be last month's price per kilogram in dollars. Last month cost 15p and this "
        "month "
        "cost 10(p + 0.2), so 15p + 10(p + 0.2) = 102. Collecting the terms gives 25p = 100, so "
        "p = 4. The answer is 4.\n\n"
        "Q: What is 1 + 1?\nA:"
    )
    assert chain_of_thought_prompt("Q?", EXAMPLES[0]).startswith(
        "Solve each problem step by step, then give the answer.\n\n"
        "Q: What is 2 + 3?\nA: Adding gives 5. The answer is 5.\n\n"
    )


def test_zero_shot_cot_prompt_text():
    assert (
        zero_shot_cot_prompt("What is 6 * 7?") == "Q: What is 6 * 7?\nA: Let's think step by step."
    )


def test_few_shot_cot_and_a_new_template_are_just_data():
    assert build_prompt("few-shot-cot", "Q?", EXAMPLES, k=1) == (
        "Solve each problem step by step, then give the answer.\n\n"
        "Q: What is 2 + 3?\nA: Adding gives 5. The answer is 5.\n\nQ: Q?\nA:"
    )
    terse = PromptTemplate(
        "terse", instruction="Numbers only.", from_pool=True, cue=" The answer is"
    )
    assert build_prompt(terse, "Q?", EXAMPLES, k=1) == (
        "Numbers only.\n\nQ: What is 2 + 3?\nA: The answer is 5.\n\nQ: Q?\nA: The answer is"
    )


def test_builder_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown strategy 'tree-of-thought'.*zero-shot"):
        build_prompt("tree-of-thought", "Q?")
    with pytest.raises(ValueError, match="needs k >= 1 examples; got k=4 and 3"):
        few_shot_prompt("Q?", EXAMPLES, k=4)
    with pytest.raises(ValueError, match="needs reasoning"):
        build_prompt("few-shot-cot", "Q?", [Problem("What is 1?", Fraction(1))], k=1)


# --- generated problems ---------------------------------------------------------------


def test_every_gold_answer_satisfies_its_equation():
    """Substitute the gold answer back: both sides must be exactly equal (rational arithmetic)."""
    problems = generate_problems(6 * len(TEMPLATES), seed=3)
    assert {p.kind for p in problems} == set(TEMPLATES)
    for problem in problems:
        symbol = sympy.Symbol(problem.unknown)
        lhs, rhs = (
            sympy.sympify(side, rational=True, locals={problem.unknown: symbol})
            for side in problem.equation.split("=")
        )
        gold = sympy.Rational(problem.answer.numerator, problem.answer.denominator)
        assert sympy.simplify((lhs - rhs).subs(symbol, gold)) == 0, problem
        assert problem.answer > 0
        assert problem.reasoning.endswith(
            f"{problem.unknown} = {format_number(problem.answer)}."
        ), problem.reasoning


def test_price_example_is_the_one_from_the_chapter():
    assert PRICE_EXAMPLE.equation == "15*p + 10*(p + 0.2) = 102"
    assert PRICE_EXAMPLE.answer == 4


def test_generation_is_seeded_and_distinct():
    first, again, other = (
        generate_problems(20, seed=7),
        generate_problems(20, seed=7),
        generate_problems(20, seed=8),
    )
    assert first == again and first != other
    assert len({p.question for p in first}) == 20
    assert [p.kind for p in generate_problems(3, kinds=["garden"])] == ["garden"] * 3
    with pytest.raises(ProblemError, match="unknown problem kind"):
        generate_problems(2, kinds=["calculus"])


@pytest.mark.parametrize(
    "equation,unknown,answer",
    [
        ("15*p + 10*(p + 0.2) = 102", "p", Fraction(4)),
        ("t/2 + t/6 = 1", "t", Fraction(3, 2)),
        ("w*(w + 3) = 40", "w", Fraction(5)),  # the root -8 is discarded: w is positive
        ("0.3*v + 0.05*12 = 0.2*(v + 12)", "v", Fraction(18)),
    ],
)
def test_solve_equation(equation, unknown, answer):
    assert solve_equation(equation, unknown) == answer


@pytest.mark.parametrize(
    "equation,message",
    [
        ("p + 1", "not an equation"),
        ("p = p + 1", "not one rational"),
        ("(x - 1)*(x - 2) = 0", "not one rational"),
        ("x**2 = 2", "not one rational"),
        ("3*x + = 2", "cannot read"),
    ],
)
def test_solve_equation_rejects_bad_equations(equation, message):
    with pytest.raises(ProblemError, match=message):
        solve_equation(equation, "x" if "x" in equation else "p")


@pytest.mark.parametrize(
    "value,text",
    [
        (Fraction(4), "4"),
        (Fraction(9, 2), "4.5"),
        (Fraction(-1, 4), "-0.25"),
        (Fraction(1, 8), "0.125"),
        (Fraction(2, 3), "2/3"),
        (Fraction(1, 20), "0.05"),
    ],
)
def test_format_number(value, text):
    assert format_number(value) == text


def test_format_number_agrees_with_decimal_on_random_terminating_fractions():
    """`decimal` divides exactly when the result terminates; its plain form must match ours."""
    rng = random.Random(0)
    for _ in range(200):
        value = Fraction(
            rng.randint(-(10**6), 10**6), 2 ** rng.randint(0, 6) * 5 ** rng.randint(0, 6)
        )
        exact = Decimal(value.numerator) / Decimal(value.denominator)
        assert format_number(value) == format(exact.normalize(), "f"), value


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_gsm8k_loader(tmp_path):
    path = write_jsonl(
        tmp_path / "gsm8k.jsonl",
        [
            {
                "question": "Eggs?",
                "answer": "16 - 3 = <<16-3=13>>13 eggs.\nSo 13 * 2 = <<13*2=26>>26.\n#### 26",
            },
            {"question": "A house?", "answer": "It costs 80,000 + 50,000.\n#### 130,000"},
            {"question": "Change?", "answer": "He is short.\n#### -4.5"},
        ],
    )
    problems = load_gsm8k_jsonl(path)
    assert [p.answer for p in problems] == [26, 130000, Fraction(-9, 2)]
    assert problems[0].reasoning == "16 - 3 = 13 eggs. So 13 * 2 = 26."
    assert len(load_gsm8k_jsonl(path, limit=2)) == 2


@pytest.mark.parametrize(
    "row,message",
    [
        ('{"question": "Q?", "answer": "12"}', r":2: the answer does not end in '#### N'"),
        ('{"question": "Q?"}', r":2: missing or non-text field\(s\) \['answer'\]"),
        ('{"question": "Q?", "answer": "so\\n#### twelve"}', r":2: the final answer 'twelve'"),
        ('{"question": "Q?", "answer": ', r":2: not valid JSON"),
        ('["Q?", "#### 1"]', r":2: expected a JSON object, got list"),
    ],
)
def test_gsm8k_loader_names_the_bad_line(tmp_path, row, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"question": "Fine?", "answer": "#### 1"}, row])
    with pytest.raises(ProblemError, match=message):
        load_gsm8k_jsonl(path)


def test_gsm8k_loader_missing_or_empty_file(tmp_path):
    with pytest.raises(ProblemError, match="no such file"):
        load_gsm8k_jsonl(tmp_path / "nothing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ProblemError, match="holds no problems"):
        load_gsm8k_jsonl(tmp_path / "empty.jsonl")


# --- answer extraction ----------------------------------------------------------------

PHRASINGS = [
    ("The answer is 4.", Fraction(4)),
    ("So p = 4. The answer is 4", Fraction(4)),
    ("the answer is: 12", Fraction(12)),
    ("Answer: 7", Fraction(7)),
    ("The final answer is $4.50.", Fraction(9, 2)),
    ("It costs $4.50", Fraction(9, 2)),
    ("He needs 4 kg of flour.", Fraction(4)),
    ("about 3/4 of the tank", Fraction(3, 4)),
    ("The answer is 3/4 of a cup.", Fraction(3, 4)),
    ("The house costs 1,234,567 dollars", Fraction(1234567)),
    ("In total 1,234.5 litres", Fraction(2469, 2)),
    ("The temperature fell to -5 degrees", Fraction(-5)),
    ("The balance is \u22125", Fraction(-5)),  # the Unicode minus sign
    ("She owes -$3.25", Fraction(-13, 4)),
    ("x = -0.5", Fraction(-1, 2)),
    ("It takes .5 hours", Fraction(1, 2)),
    ("15p + 10(p + 0.2) = 102, so 25p = 100 and p = 4", Fraction(4)),
    ("First 3 apples, then 7 more", Fraction(7)),
    ("The answer is 4, not 5.", Fraction(4)),
    ("I think 6. The answer is 8. Sorry, I mean 9", Fraction(8)),
    ("He wrote the answer is 3, but the answer is 5", Fraction(5)),
    ("#### 72", Fraction(72)),
    ("Natalia sold 48 + 24 = 72 clips.\n#### 72", Fraction(72)),
    ("so the result is \\boxed{12}", Fraction(12)),
    ("A 25% rise", Fraction(25)),
    ("It was 4.5.", Fraction(9, 2)),
    ("They are 1, 2, 3", Fraction(3)),
    ("Works 9-5 each day", Fraction(9)),  # "-5" after a digit is a range, not a negative
    ("version2 of step3", None),  # digits inside words are not numbers
    ("", None),
    ("I don't know.", None),
    ("The answer is four.", None),
    ("The answer is x.", None),
    ("Answer: none of them, although 7 came close before.", Fraction(7)),
    ("The answer is unknown", None),
    ("recommended .", None),
    ("Let's think step by step.", None),
]


@pytest.mark.parametrize("text,expected", PHRASINGS)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_cut_completion_stops_at_the_next_question():
    assert cut_completion(" The answer is 4.\nQ: What is 9?\nA: 9") == " The answer is 4."
    assert cut_completion(" 4") == " 4"


# --- the harness ----------------------------------------------------------------------


def scripted_reasoner(answers: dict[str, Fraction]):
    """A fake model: right only when the prompt contains worked reasoning, wrong otherwise.

    It reads the last question in the prompt, and then invents a next question of its own
    (with another number in it) the way real models do, so that cutting is tested too.
    """

    def generate(prompt: str) -> str:
        question = prompt.rsplit("Q: ", 1)[1].split("\nA:")[0]
        gold = answers[question]
        worked = "Collecting the terms" in prompt or prompt.endswith("Let's think step by step.")
        said = gold if worked else gold + 1
        return (
            f" So x = {format_number(said)}. The answer is {format_number(said)}.\n"
            "Q: What is 99?\nA: The answer is 99."
        )

    return generate


def test_chain_of_thought_scores_100_and_zero_shot_0_with_a_scripted_model(tmp_path):
    problems = generate_problems(9, seed=11)
    examples = example_pool(problems, 2, seed=11)
    generate = scripted_reasoner({p.question: p.answer for p in problems})
    log = tmp_path / "runs" / "completions.jsonl"
    result = evaluate_prompting(generate, problems, list(STRATEGIES), examples, k=2, log_path=log)
    assert result.accuracy() == {
        "zero-shot": 0.0,
        "few-shot": 0.0,
        "cot": 1.0,
        "zero-shot-cot": 1.0,
        "few-shot-cot": 1.0,
    }
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(rows) == len(STRATEGIES) * len(problems)
    first = rows[0]
    assert first["prompt"] == build_prompt("zero-shot", problems[0].question)
    assert first["gold"] == format_number(problems[0].answer)
    assert first["predicted"] == format_number(problems[0].answer + 1) and first["correct"] is False
    assert "| cot | 9 / 9 | 1.000 | 0 |" in result.table()


def test_harness_compares_numbers_exactly_not_as_text():
    problems = [Problem("Half of 9?", Fraction(9, 2)), Problem("A third?", Fraction(1, 3))]
    replies = {"Half of 9?": "It is $4.50", "A third?": "about 0.33"}
    result = evaluate_prompting(
        lambda p: replies[p.rsplit("Q: ", 1)[1].split("\n")[0]], problems, ["zero-shot"]
    )
    assert [r["correct"] for r in result.records] == [True, False]


def test_harness_refuses_examples_that_are_test_problems():
    problems = generate_problems(4)
    with pytest.raises(ValueError, match="also test problems"):
        evaluate_prompting(lambda p: "", problems, ["few-shot"], examples=problems, k=2)
    with pytest.raises(ValueError, match="no problems"):
        evaluate_prompting(lambda p: "", [], ["zero-shot"])


def test_committed_prompt_gallery_is_current():
    """The prompts shown in the docs are what the builders produce today."""
    page = (DOCS_RESULTS / "prompting-prompts.md").read_text()
    assert page.split("\n*Made by `")[0].rstrip("\n") == prompt_gallery().rstrip("\n")


# --- a real model: generation and the verbalizer --------------------------------------


@pytest.fixture(scope="module")
def tiny_lm():
    return load_model("tiny-gpt2", task="causal-lm")


def test_hf_generate_greedy_returns_only_new_text(tiny_lm):
    model, tokenizer = tiny_lm
    generate = HFGenerate(model, tokenizer, max_new_tokens=8)
    prompt = zero_shot_prompt("What is 2 + 3?")
    completion = generate(prompt)
    ids = model.generate(
        **tokenizer(prompt, return_tensors="pt"), max_new_tokens=8, do_sample=False
    )
    assert completion == tokenizer.decode(
        ids[0, len(tokenizer(prompt)["input_ids"]) :], skip_special_tokens=True
    )
    assert len(tokenizer(completion)["input_ids"]) <= 8
    assert generate(prompt) == completion  # greedy is deterministic


def test_hf_generate_sampling_is_seeded_and_long_prompts_are_cut(tiny_lm):
    model, tokenizer = tiny_lm
    sample = HFGenerate(model, tokenizer, max_new_tokens=6, do_sample=True, temperature=1.5, seed=1)
    prompts = ["the film was", "the plot was", "I loved the", "honestly , the cast"]
    first = [sample(p) for p in prompts]
    # per-prompt seeding: order does not matter
    assert [sample(p) for p in reversed(prompts)] == first[::-1]
    assert len(set(first)) > 1
    long_prompt = "the film was great " * 200  # 800 tokens, more than the 512 of the context
    assert isinstance(sample(long_prompt), str) and sample.truncated == 1


def test_greedy_batches_write_what_one_prompt_at_a_time_writes(tiny_lm):
    """Left-padded batches of prompts of different lengths: each row's new tokens follow its
    own last token, a row that stops early keeps its own text, and the order comes back."""
    model, tokenizer = tiny_lm
    prompts = [
        "the film was",
        "I loved the",
        "honestly , the cast was really dull",
        "a must see",
        "the plot was not",
        "Review: the acting was not good",
        zero_shot_prompt("What is 2 + 3?"),
    ]
    alone = HFGenerate(model, tokenizer, max_new_tokens=12, stop=" lead")
    batched = HFGenerate(model, tokenizer, max_new_tokens=12, stop=" lead", batch_size=4)
    expected = [alone(prompt) for prompt in prompts]
    assert batched.many(prompts) == expected
    assert alone.many(prompts) == expected  # batch_size 1: one at a time
    lengths = {len(tokenizer(text)["input_ids"]) for text in expected}
    assert len(lengths) > 2  # rows end at different steps (eos, the stop text, or 12 tokens)
    assert any(text.endswith(" lead") for text in expected)


def test_the_harness_sends_batches_to_a_generator_that_takes_them():
    problems = generate_problems(5, seed=2)
    answers = {p.question: p.answer for p in problems}
    reasoner = scripted_reasoner(answers)
    calls = []

    class Batched:
        batch_size = 2

        def __call__(self, prompt):
            raise AssertionError("a batched generator is sent batches")

        def many(self, prompts):
            calls.append(len(prompts))
            return [reasoner(p) for p in prompts]

    result = evaluate_prompting(Batched(), problems, ["zero-shot", "cot"])
    assert calls == [2, 2, 2, 2, 2]  # 10 prompts, strategy by strategy
    expected = evaluate_prompting(reasoner, problems, ["zero-shot", "cot"])
    drop = lambda records: [{k: v for k, v in r.items() if k != "seconds"} for r in records]  # noqa: E731
    assert drop(result.records) == drop(expected.records)


def hand_logprob(model, tokenizer, prompt: str, word: str) -> tuple[float, float]:
    """log p(first token of word | prompt) and log p(word | prompt), one unpadded row at a time."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    word_ids = tokenizer(word, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + word_ids])).logits[0]
    logp = torch.log_softmax(logits, dim=-1)
    per_token = [logp[len(prompt_ids) - 1 + i, t].item() for i, t in enumerate(word_ids)]
    return per_token[0], sum(per_token)


REVIEWS = [
    "I loved the plot",
    "the acting was not good",
    "honestly , the cast was really dull",
    "the start was dull , but I adored the ending",
    "a must see",
    "the film was",
]


def test_verbalizer_scores_match_a_hand_computation(tiny_lm):
    """Batched, right-padded scores equal one-row-at-a-time log-softmax (float32: LOGPROB_ATOL)."""
    model, tokenizer = tiny_lm
    # different lengths: padding is used
    prompts = [sentiment_prompt(t) for t in REVIEWS[:4]] + REVIEWS[4:]
    words = [" negative", " positive", " one star"]
    assert len(tokenizer(" one star", add_special_tokens=False)["input_ids"]) == 2
    first = verbalizer_scores(model, tokenizer, prompts, words, batch_size=4)
    summed = verbalizer_scores(model, tokenizer, prompts, words, reduction="sum", batch_size=4)
    assert first.shape == summed.shape == (len(prompts), len(words))
    for i, prompt in enumerate(prompts):
        for j, word in enumerate(words):
            expected_first, expected_sum = hand_logprob(model, tokenizer, prompt, word)
            assert first[i, j].item() == pytest.approx(expected_first, abs=LOGPROB_ATOL)
            assert summed[i, j].item() == pytest.approx(expected_sum, abs=LOGPROB_ATOL)
    # single-token words: both reductions agree; the two-token word's sum is lower than its first
    # token
    assert torch.allclose(first[:, :2], summed[:, :2], atol=LOGPROB_ATOL)
    assert (summed[:, 2] < first[:, 2]).all()


def test_verbalizer_errors(tiny_lm):
    model, tokenizer = tiny_lm
    with pytest.raises(ValueError, match="share a first token"):
        verbalizer_scores(model, tokenizer, ["the film was"], [" one star", " one"])
    with pytest.raises(ValueError, match="unknown reduction"):
        verbalizer_scores(model, tokenizer, ["the film was"], [" good"], reduction="mean")
    with pytest.raises(ValueError, match=r"prompt 0 has \d+ tokens; at most 511 fit"):
        verbalizer_scores(model, tokenizer, ["word " * 600], [" good", " bad"])
    with pytest.raises(ValueError, match="label word 1 .* has no tokens"):
        verbalizer_scores(model, tokenizer, ["the film was"], [" good", ""])


def test_label_word_ids(tiny_lm):
    """The verbalizer's one tokenization of label words (lm_classification reads it too): each
    word on its own, no special tokens; a shared first token refused unless whole words are
    scored."""
    _, tokenizer = tiny_lm
    words = [" negative", " positive", " one star"]
    assert label_word_ids(tokenizer, words) == [
        tokenizer(w, add_special_tokens=False)["input_ids"] for w in words
    ]
    with pytest.raises(ValueError, match="share a first token: .*; choose words that start"):
        label_word_ids(tokenizer, [" one star", " one"])
    shared = label_word_ids(tokenizer, [" one star", " one"], distinct_first=False)
    assert shared[0][0] == shared[1][0] and len(shared[0]) == 2
    with pytest.raises(ValueError, match="label word 1 .* has no tokens"):
        label_word_ids(tokenizer, [" good", ""])
    with pytest.raises(ValueError, match="label word 0 has 2 tokens; at most 1 fit"):
        label_word_ids(tokenizer, [" one star"], limit=1)


def test_verbalizer_accuracy():
    scores = torch.tensor([[0.0, -1.0], [-3.0, -0.5], [-0.1, -0.2], [-2.0, -1.0]])
    assert verbalizer_accuracy(scores, [0, 1, 1, 1]) == 0.75
    with pytest.raises(ValueError, match="do not match 3 labels"):
        verbalizer_accuracy(scores, [0, 1, 1])


def test_sentiment_prompt_and_balanced_examples():
    assert sentiment_prompt("so dull", examples=[("loved it", 1), ("awful", 0)]) == (
        "Review: loved it\nSentiment: positive\n\nReview: awful\nSentiment: negative\n\n"
        "Review: so dull\nSentiment:"
    )
    texts, labels = [f"review {i}" for i in range(40)], [int(i % 4 == 0) for i in range(40)]
    picked = balanced_examples(texts, labels, 6, seed=2)
    assert sorted(label for _, label in picked) == [0, 0, 0, 1, 1, 1]
    assert picked == balanced_examples(texts, labels, 6, seed=2)
    assert all(labels[texts.index(t)] == y for t, y in picked)


def test_a_failed_run_leaves_the_previous_log_as_it_was(tmp_path):
    from peft_course.errors import CourseError

    problems = generate_problems(3)
    log = tmp_path / "completions.jsonl"
    evaluate_prompting(lambda prompt: "The answer is 4.", problems, ["zero-shot"], log_path=log)
    before = log.read_text()
    calls = []

    def breaks_on_the_second_prompt(prompt: str) -> str:
        calls.append(prompt)
        if len(calls) == 2:
            raise RuntimeError("the model crashed")
        return "5"

    with pytest.raises(RuntimeError):
        evaluate_prompting(breaks_on_the_second_prompt, problems, ["zero-shot"], log_path=log)
    with pytest.raises(CourseError, match="needs k >= 1"):  # found before the first prompt is sent
        evaluate_prompting(
            breaks_on_the_second_prompt, problems, ["zero-shot", "few-shot"], k=0, log_path=log
        )
    assert log.read_text() == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "completions.jsonl"
    ]


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_a_shared_prefix_runs_once_and_changes_nothing(name, monkeypatch):
    """k-shot prompts share their examples: `next_token_logprobs` runs that prefix once and reuses
    its keys and values. Measured against running every prompt whole: at most 4e-6 apart on the
    tiny models (2.3e-5 on SmolLM2), the same argmax everywhere; the test allows
    PREFIX_CACHE_ATOL."""
    import peft_course.prompting as prompting
    from peft_course.data import load_classification_data
    from peft_course.models import load_model

    model, tokenizer = load_model(name, "causal-lm")
    data = load_classification_data("synthetic-sentiment", max_examples=24)
    examples = prompting.balanced_examples(
        data.splits["train"]["text"], data.splits["train"]["label"], 4, 0
    )
    rows = [
        tokenizer(prompting.sentiment_prompt(t, examples=examples))["input_ids"]
        for t in data.splits["test"]["text"]
    ]
    assert prompting.shared_prefix_length(rows) >= prompting.SHARED_PREFIX_MIN
    cached = prompting.next_token_logprobs(model, tokenizer, rows, batch_size=5)
    monkeypatch.setattr(prompting, "SHARED_PREFIX_MIN", 10**9)  # every prompt whole
    whole = prompting.next_token_logprobs(model, tokenizer, rows, batch_size=5)
    assert (cached - whole).abs().max() < PREFIX_CACHE_ATOL
    assert torch.equal(cached.argmax(dim=1), whole.argmax(dim=1))
    assert prompting.shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2, (
        "each row keeps a token of its own"
    )
