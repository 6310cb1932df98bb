"""Fine-tuning from a script: peft LoRA on tiny-gpt2, then the trained model on new texts."""

from peft_course.data import load_classification_data
from peft_course.finetune import finetune
from peft_course.runs import predict_texts
from peft_course.training import TrainConfig

data = load_classification_data("synthetic-sentiment", max_examples=120)
result = finetune(
    data,
    method="lora",
    model_name="tiny-gpt2",
    config=TrainConfig(epochs=2, learning_rate=5e-3),
    r=8,
    alpha=16,
    targets=["c_attn"],
)
print(f"trainable {result.trainable:,} of {result.total:,}")
print("test accuracy: untrained", result.untrained["accuracy"], "best", result.best["accuracy"])

texts = ["a superb , moving film .", "the plot was not good ."]
for row in predict_texts(result.model, result.tokenizer, texts):
    print(f"{row['text']!r}: {row['label']}")
