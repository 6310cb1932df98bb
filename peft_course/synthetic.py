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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from peft_course.errors import CourseError

POSITIVE_ADJECTIVES = [
    "good",
    "great",
    "superb",
    "moving",
    "delightful",
    "brilliant",
    "charming",
    "gripping",
    "wonderful",
    "clever",
    "beautiful",
    "funny",
    "touching",
    "fresh",
    "memorable",
    "warm",
]
NEGATIVE_ADJECTIVES = [
    "bad",
    "awful",
    "dull",
    "boring",
    "clumsy",
    "tedious",
    "bland",
    "messy",
    "terrible",
    "weak",
    "forgettable",
    "lifeless",
    "silly",
    "stale",
    "painful",
    "cold",
]
POSITIVE_VERBS = ["loved", "enjoyed", "adored", "admired", "liked", "savoured"]
NEGATIVE_VERBS = ["hated", "disliked", "loathed", "regretted", "resented", "despised"]
SUBJECTS = [
    "the film",
    "the movie",
    "the plot",
    "the acting",
    "the script",
    "the ending",
    "the soundtrack",
    "the story",
    "the cast",
    "the dialogue",
    "the pacing",
    "the director's work",
    "the first act",
    "the camera work",
    "the lead role",
    "the sequel",
]
INTENSIFIERS = ["", "", "really ", "truly ", "quite ", "very ", "rather "]
NEGATED_INTENSIFIERS = ["", "", "very ", "really ", "at all "]
OPENERS = ["", "", "", "honestly , ", "overall , ", "to be fair , ", "in short , "]

POSITIVE_VERDICTS = ["recommended .", "five stars .", "a must see ."]
NEGATIVE_VERDICTS = ["not recommended .", "one star .", "a waste of time ."]

SENTIMENT_LABELS = ["negative", "positive"]


@dataclass(frozen=True)
class Example:
    """One generated example: its text and its label (0 = negative, 1 = positive).

    Attributes:
        text: the sentence.
        label: the class id (0 = negative, 1 = positive for sentiment; the index into
            `EMOTION_LABELS` for emotions).
    """

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
    """One sentence with sentiment `label`; a fifth of them contrast two clauses with "but".

    Args:
        rng: the random source the words and the sentence's shape are drawn from.
        label: 0 for a negative sentence, 1 for a positive one.
    """
    positive = label == 1
    if rng.random() < 0.2:
        first = _clause(rng, not positive)
        text = f"{first} , but {_clause(rng, positive)}"
    else:
        text = _clause(rng, positive)
    return f"{rng.choice(OPENERS)}{text}"


def balanced_splits(
    make: Callable[[random.Random, int], Any], num_labels: int, sizes: dict[str, int], seed: int = 0
) -> dict[str, list[Any]]:
    """Disjoint splits of the given sizes with every label equally often, from `make(rng, label)`.

    Examples are drawn until enough *distinct* ones of each label exist, then dealt into the
    splits in equal shares per label, so every split is balanced and no test example is in train.

    Args:
        make: `make(rng, label)` draws one (hashable) example of `label`.
        num_labels: the labels are 0 to `num_labels - 1`.
        sizes: each split's name and number of examples, a positive multiple of `num_labels`.
        seed: seeds the random source passed to `make` and the shuffle of each split.

    Returns:
        Each split's name and its examples, in random order.

    Raises:
        CourseError: if a size is not a positive multiple of `num_labels`, or that many distinct
            examples cannot be generated.
    """
    if any(n < num_labels or n % num_labels for n in sizes.values()):
        raise CourseError(f"split sizes must be multiples of the {num_labels} labels, got {sizes}")
    total = sum(sizes.values())
    rng = random.Random(seed)
    seen: set[Any] = set()
    by_label: list[list[Any]] = [[] for _ in range(num_labels)]
    attempts = 0
    while sum(map(len, by_label)) < total:
        attempts += 1
        if attempts > 50 * total:
            raise CourseError(f"cannot generate {total} distinct examples; ask for fewer")
        label = next(
            k for k in range(num_labels) if len(by_label[k]) < total // num_labels
        )  # label by label
        example = make(rng, label)
        if example not in seen:
            seen.add(example)
            by_label[label].append(example)
    splits, start = {}, 0
    for name, n in sizes.items():
        share = n // num_labels
        rows = [e for examples in by_label for e in examples[start : start + share]]
        rng.shuffle(rows)
        splits[name], start = rows, start + share
    return splits


def synthetic_sentiment(
    n_train: int = 2000, n_validation: int = 400, n_test: int = 400, seed: int = 0
) -> dict[str, list[Example]]:
    """Balanced, disjoint train/validation/test splits of generated reviews
    (same seed, same splits).

    Args:
        n_train: examples in `train` (even: half of each label).
        n_validation: examples in `validation` (even).
        n_test: examples in `test` (even).
        seed: the generator's seed.

    Returns:
        The `train`, `validation` and `test` examples.
    """
    return balanced_splits(
        lambda rng, label: Example(make_sentence(rng, label), label),
        2,
        {"train": n_train, "validation": n_validation, "test": n_test},
        seed,
    )


# --- entailment -----------------------------------------------------------------------

ENTAILMENT_LABELS = ["entailment", "not_entailment"]
PEOPLE = ["the director", "the actor", "the critic", "the writer", "the singer", "the producer"]
PAIR_VERBS = ["admired", "praised", "thanked", "criticised", "ignored", "interviewed"]


@dataclass(frozen=True)
class PairExample:
    """A premise (`text`), a hypothesis (`text_pair`) and whether the first entails the second.

    Attributes:
        text: the premise.
        text_pair: the hypothesis.
        label: 0 (`entailment`) if the premise entails the hypothesis, 1 (`not_entailment`)
            if not.
    """

    text: str
    text_pair: str
    label: int


def _fact(rng: random.Random) -> tuple[str, str, str]:
    """(subject, adjective, its negation-free clause), e.g.
    ("the plot", "dull", "the plot was dull")."""
    subject = rng.choice(SUBJECTS)
    adjective = rng.choice(POSITIVE_ADJECTIVES + NEGATIVE_ADJECTIVES)
    return subject, adjective, f"{subject} was {adjective}"


def make_pair(rng: random.Random, label: int) -> PairExample:
    """A premise and a hypothesis that follows from it (label 0) or does not (label 1).

    Premises state two facts (`A and B`) or an action between two people. A hypothesis that
    follows repeats one fact or the action; one that does not negates a fact, states a fact
    about something the premise does not mention, or swaps the two people's roles.

    Args:
        rng: the random source the pair is drawn from.
        label: 0 for a hypothesis that follows, 1 for one that does not.
    """
    if rng.random() < 0.35:  # who did what to whom
        first, second = rng.sample(PEOPLE, 2)
        verb = rng.choice(PAIR_VERBS)
        premise = f"{first} {verb} {second} ."
        hypothesis = f"{first} {verb} {second} ." if label == 0 else f"{second} {verb} {first} ."
        return PairExample(premise, hypothesis, label)
    (s1, a1, f1), (s2, a2, f2) = _fact(rng), _fact(rng)
    while s2 == s1:
        s2, a2, f2 = _fact(rng)
    premise = f"{f1} and {f2} ."
    subject, adjective, fact = (s1, a1, f1) if rng.random() < 0.5 else (s2, a2, f2)
    if label == 0:
        return PairExample(premise, f"{fact} .", label)
    if rng.random() < 0.6:
        return PairExample(premise, f"{subject} was not {adjective} .", label)
    other = rng.choice([s for s in SUBJECTS if s not in (s1, s2)])
    return PairExample(premise, f"{other} was {adjective} .", label)


def synthetic_entailment(
    n_train: int = 2000, n_validation: int = 400, n_test: int = 400, seed: int = 0
) -> dict[str, list[PairExample]]:
    """Balanced, disjoint premise/hypothesis splits
    (negations, unmentioned subjects, swapped roles).

    Args:
        n_train: pairs in `train` (even: half of each label).
        n_validation: pairs in `validation` (even).
        n_test: pairs in `test` (even).
        seed: the generator's seed.

    Returns:
        The `train`, `validation` and `test` pairs.
    """
    return balanced_splits(
        make_pair, 2, {"train": n_train, "validation": n_validation, "test": n_test}, seed
    )


# --- six emotions -------------------------------------------------------------------------

EMOTION_LABELS = ["sadness", "joy", "love", "anger", "fear", "surprise"]
EMOTION_WORDS = [
    ["sad", "lonely", "miserable", "gloomy", "heartbroken", "down"],
    ["happy", "cheerful", "delighted", "glad", "joyful", "thrilled"],
    ["loving", "tender", "devoted", "affectionate", "fond", "caring"],
    ["angry", "furious", "annoyed", "irritated", "outraged", "bitter"],
    ["afraid", "scared", "nervous", "anxious", "terrified", "worried"],
    ["surprised", "amazed", "astonished", "shocked", "stunned", "startled"],
]
EMOTION_FRAMES = [
    "i feel {}",
    "i am feeling {}",
    "honestly i felt {}",
    "i was {}",
    "right now i feel {}",
    "i keep feeling {}",
]
EMOTION_DEGREES = ["", "", "very ", "really ", "quite ", "so "]
EMOTION_ENDINGS = [
    "",
    " today",
    " tonight",
    " again",
    " about the news",
    " after the call",
    " at work",
]


def synthetic_emotion(
    n_train: int = 1200, n_validation: int = 240, n_test: int = 240, seed: int = 0
) -> dict[str, list[Example]]:
    """Six-class sentences in the `emotion` dataset's labels, balanced and disjoint.

    Args:
        n_train: examples in `train` (a multiple of 6).
        n_validation: examples in `validation` (a multiple of 6).
        n_test: examples in `test` (a multiple of 6).
        seed: the generator's seed.

    Returns:
        The `train`, `validation` and `test` examples, labelled as in `EMOTION_LABELS`.
    """

    def make(rng: random.Random, label: int) -> Example:
        feeling = rng.choice(EMOTION_DEGREES) + rng.choice(EMOTION_WORDS[label])
        return Example(
            rng.choice(EMOTION_FRAMES).format(feeling) + rng.choice(EMOTION_ENDINGS), label
        )

    return balanced_splits(
        make, 6, {"train": n_train, "validation": n_validation, "test": n_test}, seed
    )


def review_corpus(seed: int = 0, n_reviews: int = 3000) -> list[str]:
    """Unlabelled "reviews": sentences of one polarity closed by a verdict ("five stars .").

    This is the embedded model's pretraining text. To predict the verdict after a " .", a
    language model has to carry the sentiment read so far into that position - the reason
    real GPT-2, pretrained on web text full of reviews and star ratings, has features that
    carry sentiment at the end of a sentence.
    A few lines of numbers and label words are added so that they become single tokens.

    Args:
        seed: the generator's seed.
        n_reviews: the number of reviews, alternately negative and positive.
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


# Instruction-style documents, as web text has them: an instruction written one of many ways,
# `Text: ...`, an answer cue, then the answer. The pieces cover the words of the seed project's
# five prompt templates without reproducing any of them.
TASK_VERBS = ["Classify", "Read", "Analyze", "Label", "Decide on", "Judge", "Rate"]
TASK_OBJECTS = [
    "the following text",
    "the text below",
    "this review",
    "the following review",
    "the sentence below",
]
TASK_ASKS = [
    "as either positive or negative sentiment",
    "and classify it as either positive or negative",
    "and determine whether its sentiment is positive or negative",
    "as positive or negative",
    "and classify its sentiment as either positive or negative",
]
GOOD_FEELINGS = [
    "happiness",
    "satisfaction",
    "positivity",
    "joy",
    "gratitude",
    "enthusiasm",
    "appreciation",
    "optimism",
]
BAD_FEELINGS = [
    "sadness",
    "anger",
    "negativity",
    "frustration",
    "disappointment",
    "criticism",
    "dissatisfaction",
]
ADVICE = [
    "Remember to consider the overall tone, context, and emotional cues conveyed in the text.",
    "Focus on the overall tone and context.",
    "Consider the emotional intent, tone, and wording used.",
    "Provide the most accurate classification based on these cues.",
    "Please answer with one word.",
]
CUES = ["Sentiment:", "Sentiment:", "Sentiment:", "Answer:", "Label:"]
ANSWER_ASIDES = [" this review is", " this review is", " this text is", " clearly"]
ASIDE_SHARE = 0.3  # answers that go on in other words before the label word


def make_instruction(rng: random.Random) -> str:
    """One instruction: a task sentence, perhaps a definition of the classes, perhaps advice.

    Args:
        rng: the random source the instruction is drawn from.
    """
    verb = rng.choice(TASK_VERBS)
    verb = f"Please {verb.lower()}" if rng.random() < 0.3 else verb
    sentences = [f"{verb} {rng.choice(TASK_OBJECTS)} {rng.choice(TASK_ASKS)}."]
    if rng.random() < 0.6:
        good = ", ".join(rng.sample(GOOD_FEELINGS, rng.randint(1, 3)))
        bad = ", ".join(rng.sample(BAD_FEELINGS, rng.randint(1, 3)))
        sentences.append(
            f"{rng.choice(['Positive', 'A positive sentiment'])} "
            f"{rng.choice(['means', 'conveys', 'expresses', 'includes'])} {good}, while "
            f"{rng.choice(['negative', 'a negative sentiment'])} "
            f"{rng.choice(['means', 'conveys', 'reflects', 'includes'])} {bad}."
        )
    if rng.random() < 0.5:
        sentences.append(rng.choice(ADVICE))
    return " ".join(sentences)


def instruction_corpus(seed: int = 0, n_documents: int = 3000) -> list[str]:
    """Instruction-style documents: instruction, blank line, `Text: <sentence>`, a cue, an answer.

    Most answers are the sentence's sentiment word after the cue, as an annotated review on the
    web would have it; some go on in other words (" this review is positive"), so a model
    pretrained on this writes the bare label word only when it is fairly sure. That is why an
    untrained model scores lower by strict match than by the verbalizer.

    Args:
        seed: the generator's seed.
        n_documents: the number of documents.
    """
    rng = random.Random(seed + 2)
    documents = []
    for _ in range(n_documents):
        label = rng.randint(0, 1)
        answer = f" {SENTIMENT_LABELS[label]}"
        if rng.random() < ASIDE_SHARE:
            answer = f"{rng.choice(ANSWER_ASIDES)}{answer}"
        documents.append(
            f"{make_instruction(rng)}\n\nText: "
            f"{make_sentence(rng, label)}\n{rng.choice(CUES)}{answer}"
        )
    return documents


def labelled_phrases(seed: int = 0, n_documents: int = 3000) -> list[str]:
    """The shortest annotated texts: `Text: dull` or `Text: the plot was dull`, a cue, the label.

    With one polarity word a few tokens before the cue, a model at initialisation (which
    attends about evenly to everything before it) already sees the word's signal strongly at
    the cue. These make the attention that carries sentiment to the cue appear after a few
    hundred pretraining steps instead of thousands, and it then serves the longer documents.

    Args:
        seed: the generator's seed.
        n_documents: the number of texts.
    """
    rng = random.Random(seed + 3)
    documents = []
    for _ in range(n_documents):
        label = rng.randint(0, 1)
        adjective = rng.choice(POSITIVE_ADJECTIVES if label else NEGATIVE_ADJECTIVES)
        text = adjective if rng.random() < 0.5 else f"{rng.choice(SUBJECTS)} was {adjective}"
        documents.append(f"Text: {text}\nSentiment: {SENTIMENT_LABELS[label]}")
    return documents


def pretraining_corpus(seed: int = 0) -> list[str]:
    """The embedded model's pretraining text:
    reviews, instruction-style documents, short annotations.

    Args:
        seed: the seed of all three generators and of the shuffle that mixes them.
    """
    documents = review_corpus(seed) + instruction_corpus(seed) + labelled_phrases(seed)
    random.Random(seed + 4).shuffle(documents)
    return documents
