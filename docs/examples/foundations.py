"""Foundations from a script: load tiny-gpt2 and a dataset, train the head alone, score it."""

from peft_course.data import load_classification_data, tokenize
from peft_course.methods import prepare_head_only
from peft_course.models import count_parameters, load_model
from peft_course.training import TrainConfig, evaluate_classifier, load_trainable_state, train

data = load_classification_data("synthetic-sentiment", max_examples=120)
model, tokenizer = load_model("tiny-gpt2", task="classification", num_labels=data.num_labels)
tokenized = tokenize(data, tokenizer, max_length=64)

model = prepare_head_only(model)  # only `score` keeps requires_grad
trainable, total = count_parameters(model)
print(f"trainable {trainable:,} of {total:,}")

result = train(model, tokenized, tokenizer, TrainConfig(epochs=2, learning_rate=2e-2))
load_trainable_state(model, result.best_state)  # the best-validation weights
test = evaluate_classifier(model, tokenized["test"], tokenizer)
print(f"validation {result.best_val_accuracy:.3f}, test {test['accuracy']:.3f}")
