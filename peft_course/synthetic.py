"""Data the package writes itself: a learnable sentiment set and a text corpus.

Nothing here is copied from a real review. Sentences are built from small word lists and
templates, so the set is free to ship, identical on every machine for a seed, and small
enough to train on a CPU in seconds. It is *learnable but not trivial*:

* polarity comes from adjectives and verbs ("a moving film", "I loathed the plot");
* negation flips it ("the acting was not good" is negative), so counting positive words
  is not enough;
* contrast clauses ("the start was dull, but the ending was superb") take the polarity of
  the clause after "but".

A GPT-2 classifier reads the hidden state of the *last* token. Most sentences end on their
polarity word, so even a frozen model with a trained head (head-only) does better than
chance; the negated and contrasted quarter needs the layers below to change (LoRA, full).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

POSITIVE_ADJECTIVES = [
    "good", "great", "superb", "moving", "delightful", "brilliant", "charming", "gripping",
    "wonderful", "clever", "beautiful", "funny", "touching", "fresh", "memorable", "warm",
]
NEGATIVE_ADJECTIVES = [
    "bad", "awful", "dull", "boring", "clumsy", "tedious", "bland", "messy",
    "terrible", "weak", "forgettable", "lifeless", "silly", "stale", "painful", "cold",
]
POSITIVE_VERBS = ["loved", "enjoyed", "adored", "admired", "liked", "savoured"]
NEGATIVE_VERBS = ["hated", "disliked", "loathed", "regretted", "resented", "despised"]
SUBJECTS = [
    "the film", "the movie", "the plot", "the acting", "the script", "the ending",
    "the soundtrack", "the story", "the cast", "the dialogue", "the pacing", "the director's work",
    "the first act", "the camera work", "the lead role", "the sequel",
]
INTENSIFIERS = ["", "", "really ", "truly ", "quite ", "very ", "rather "]
NEGATED_INTENSIFIERS = ["", "", "very ", "really ", "at all "]
OPENERS = ["", "", "", "honestly , ", "overall , ", "to be fair , ", "in short , "]

POSITIVE_VERDICTS = ["recommended .", "five stars .", "a must see ."]
NEGATIVE_VERDICTS = ["not recommended .", "one star .", "a waste of time ."]

SENTIMENT_LABELS = ["negative", "positive"]


@dataclass(frozen=True)
class Example:
    """One generated example: its text and its label (0 = negative, 1 = positive)."""

    text: str
    label: int


def _clause(rng: random.Random, positive: bool) -> str:
    """A clause whose polarity is `positive`, possibly reached through a negation."""
    negate = rng.random() < 0.25
    surface_positive = positive != negate  # a negated clause states the opposite word
    subject = rng.choice(SUBJECTS)
    if rng.random() < 0.8:
        adjective = rng.choice(POSITIVE_ADJECTIVES if surface_positive else NEGATIVE_ADJECTIVES)
        if negate:
            return f"{subject} was not {rng.choice(NEGATED_INTENSIFIERS)}{adjective}"
        return f"{subject} was {rng.choice(INTENSIFIERS)}{adjective}"
    verb = rng.choice(POSITIVE_VERBS if surface_positive else NEGATIVE_VERBS)
    return f"I {'never ' if negate else ''}{verb} {subject}"


def make_sentence(rng: random.Random, label: int) -> str:
    """One sentence with sentiment `label`; a third of them contrast two clauses with "but"."""
    positive = label == 1
    if rng.random() < 0.2:
        first = _clause(rng, not positive)
        text = f"{first} , but {_clause(rng, positive)}"
    else:
        text = _clause(rng, positive)
    return f"{rng.choice(OPENERS)}{text}"


def synthetic_sentiment(
    n_train: int = 2000, n_validation: int = 400, n_test: int = 400, seed: int = 0
) -> dict[str, list[Example]]:
    """Generate balanced, disjoint train/validation/test splits (same seed, same splits).

    Sentences are drawn until enough *distinct* ones of each label exist, then dealt into the
    splits half from each label, so every split is balanced and no test sentence is in train.
    """
    sizes = {"train": n_train, "validation": n_validation, "test": n_test}
    if any(n < 2 or n % 2 for n in sizes.values()):
        raise ValueError(f"split sizes must be even and at least 2 (half of each label), got {sizes}")
    total = sum(sizes.values())
    rng = random.Random(seed)
    seen: set[str] = set()
    by_label: list[list[Example]] = [[], []]
    attempts = 0
    while len(by_label[0]) + len(by_label[1]) < total:
        attempts += 1
        if attempts > 50 * total:
            raise ValueError(f"cannot generate {total} distinct sentences; ask for fewer")
        label = 0 if len(by_label[0]) < total // 2 else 1
        text = make_sentence(rng, label)
        if text not in seen:
            seen.add(text)
            by_label[label].append(Example(text, label))
    splits, start = {}, 0
    for name, n in sizes.items():
        rows = by_label[0][start : start + n // 2] + by_label[1][start : start + n // 2]
        rng.shuffle(rows)
        splits[name], start = rows, start + n // 2
    return splits


def review_corpus(seed: int = 0, n_reviews: int = 3000) -> list[str]:
    """Unlabelled "reviews": sentences of one polarity closed by a verdict ("five stars .").

    This is the embedded model's pretraining text. To predict the verdict after a " .", a
    language model has to carry the sentiment read so far into that position - the reason
    real GPT-2, pretrained on web text full of reviews and star ratings, has features that
    carry sentiment at the end of a sentence.
    A few lines of numbers and label words are added so that they become single tokens.
    """
    rng = random.Random(seed + 1)
    reviews = []
    for i in range(n_reviews):
        label = i % 2
        sentences = [make_sentence(rng, label) for _ in range(rng.randint(1, 3))]
        sentences.append(rng.choice(POSITIVE_VERDICTS if label else NEGATIVE_VERDICTS))
        reviews.append(" ".join(sentences))
    reviews += [f"The answer is {n} ." for n in range(200)]
    reviews += [f"Sentiment : {word}" for word in SENTIMENT_LABELS] * 50
    return reviews
