"""Prompting from a script: a few-shot prompt, the answer read back, a verbalizer's scores."""

from peft_course.models import load_model
from peft_course.prompting import extract_answer, few_shot_prompt, verbalizer_scores
from peft_course.word_problems import generate_problems

problems = generate_problems(5, seed=0)
prompt = few_shot_prompt(problems[-1].question, problems[:4], k=2)
print(prompt)
print("read back:", extract_answer("Cost: $3 a kg. The answer is 4.50."))  # 9/2, exactly

model, tokenizer = load_model("tiny-gpt2", task="causal-lm")
reviews = ["a dull , lifeless film .", "a superb , moving film ."]
scores = verbalizer_scores(model, tokenizer, reviews, [" one", " five"])  # [2 reviews, 2 words]
for review, row in zip(reviews, scores):
    print(f"{review!r}: log p(' one') {row[0]:.2f}, log p(' five') {row[1]:.2f}")
