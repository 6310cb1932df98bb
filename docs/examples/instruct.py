"""Instruction tuning from a script: the labels on the response only, an answer, exact match."""

from peft_course.instruct import answer, encode, exact_match, full_text, generated_instructions
from peft_course.models import load_model

splits = generated_instructions(n_train=5, n_validation=1, n_test=5)
example = splits["train"][4]
print(full_text(example))

model, tokenizer = load_model("tiny-gpt2", task="causal-lm")
encoded = encode(example, tokenizer, max_length=128)
prompt_tokens = encoded["labels"].count(-100)
print(f"{len(encoded['input_ids'])} tokens, the first {prompt_tokens} labelled -100 (the prompt)")

test = splits["test"]
predictions = answer(model, tokenizer, test, max_new_tokens=8)  # untrained: expect misses
for example, prediction in zip(test, predictions):
    print(f"{prediction!r} for {example.response!r}: {exact_match(prediction, example.response)}")
