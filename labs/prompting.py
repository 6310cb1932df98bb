# %% [markdown]
# # Lab: Prompting
#
# No training at all: the model is asked. This lab builds the four kinds of prompt for
# arithmetic word problems whose answers are computed exactly, reads answers back out of free
# text, scores a model through the harness, and then classifies reviews by comparing the
# probabilities of two label words (the verbalizer). The model is the embedded `tiny-gpt2`,
# which was never taught arithmetic: the point is the machinery, which takes any model name.

# %%
from peft_course.data import load_classification_data
from peft_course.models import load_model
from peft_course.prompting import (
    HFGenerate,
    build_prompt,
    evaluate_prompting,
    extract_answer,
    sentiment_by_prompting,
)
from peft_course.word_problems import generate_problems

# %% [markdown]
# ## Problems whose answers are computed
#
# Each generated problem comes from a template and an equation, so its answer is an exact
# `Fraction`, never a string to be matched.

# %%
problems = generate_problems(8, seed=0)
pool, questions = problems[:4], problems[4:]
for problem in questions:
    print(f"{problem.kind}: {problem.question}  ->  {problem.answer}")

# %% [markdown]
# ## Four ways to ask
#
# A strategy is data (`PromptTemplate`): an instruction, solved examples with or without their
# reasoning, and a cue the answer starts with. `build_prompt` lays one out.

# %%
for name in ("zero-shot", "few-shot", "cot", "zero-shot-cot"):
    prompt = build_prompt(name, questions[0].question, pool, k=2)
    print(f"--- {name} ---\n{prompt}\n")

# %% [markdown]
# ## Reading the answer back
#
# A model writes prose. `extract_answer` takes the number after "The answer is" when there is
# one and the last number otherwise, and reads money, thousands separators and fractions
# exactly.

# %%
for text in [
    "The answer is 4.50.",
    "Cost: $3 a kg, so 1.5 kg cost $4.50",
    "It is 1,200 in all.",
    "3/4 of the cake is left, so 9/12 are left",
    "I don't know.",
]:
    print(f"{text!r:48} -> {extract_answer(text)}")

# %% [markdown]
# ## The harness
#
# `evaluate_prompting` takes any `generate(prompt) -> str`. First a stand-in that always
# writes the right answer (a check of the harness itself), then tiny-gpt2 decoding greedily.

# %%
gold = {p.question: p.answer for p in questions}


def oracle(prompt: str) -> str:
    """Answers the last question of the prompt correctly (a test of the harness)."""
    question = prompt.rsplit("Q: ", 1)[1].split("\nA:")[0]  # the last question asked
    return f" The answer is {gold[question]}."


print("oracle:", evaluate_prompting(oracle, questions, ["zero-shot"]).accuracy())

model, tokenizer = load_model("tiny-gpt2", task="causal-lm")
generate = HFGenerate(model, tokenizer, max_new_tokens=16)
result = evaluate_prompting(generate, questions, ["zero-shot", "few-shot"], examples=pool, k=2)
print("tiny-gpt2:", result.accuracy())
print("a completion:", repr(result.records[0]["completion"]))

# %% [markdown]
# ## Classification by prompting: the verbalizer
#
# For a review, the prompt ends with `Sentiment:`; the label whose word (` negative`,
# ` positive`) the model finds likelier wins. No word is generated, so even a small model gets a
# score for every text.

# %%
data = load_classification_data("synthetic-sentiment", max_examples=64)
test = data.splits["test"]
scored = sentiment_by_prompting(model, tokenizer, test["text"], test["label"])
print(f"verbalizer accuracy {scored['accuracy']:.3f}, strict {scored['strict']:.3f}")
print("predicted counts (negative, positive):", scored["predicted counts"])

# %%
# %matplotlib inline
import matplotlib.pyplot as plt

margin = (scored["scores"][:, 1] - scored["scores"][:, 0]).tolist()
figure, axis = plt.subplots(figsize=(5, 3))
for label, name in enumerate(data.label_names):
    axis.hist(
        [m for m, y in zip(margin, test["label"]) if y == label],
        bins=12,
        alpha=0.6,
        label=f"true {name}",
    )
axis.axvline(0, color="black", linewidth=0.8)
axis.set_xlabel("log p(' positive') - log p(' negative')")
axis.set_ylabel("reviews")
axis.set_title("The verbalizer's margin, tiny-gpt2 untrained")
axis.legend()
plt.show()

# %% [markdown]
# ## Try this
#
# Pass `label_words=[" bad", " good"]` to `sentiment_by_prompting`, or a template of your own
# (`template="{text} It was"`), and rerun the last two cells: how far does the margin move? For
# the problems, try `"cot"` and `"zero-shot-cot"` in the harness. To ask a real model, load
# `"smollm2-135m"` instead of `"tiny-gpt2"` (installed by `make demo`).
