"""A finished run used with peft and transformers alone, after the three commands above."""

import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from peft_course.runs import load_run

texts = ["a superb , moving film .", "a dull , tedious mess ."]

# The run directory is a peft adapter directory; its adapter_config.json names the base model.
ours, _, spec = load_run("runs/lora-reviews")  # what peft-course predict loads
base_path = ours.peft_config["default"].base_model_name_or_path
tokenizer = AutoTokenizer.from_pretrained(base_path)
tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token  # GPT-2 has no pad token
base = AutoModelForSequenceClassification.from_pretrained(
    base_path, num_labels=len(spec.label_names), pad_token_id=tokenizer.pad_token_id
)
model = PeftModel.from_pretrained(base, "runs/lora-reviews").eval()
batch = tokenizer(texts, padding=True, return_tensors="pt")
with torch.no_grad():
    difference = (model(**batch).logits - ours(**batch).logits).abs().max().item()
print("largest logit difference from predict:", difference)

# The exported checkpoint needs transformers alone: labels from its config, tokenizer beside it.
classify = pipeline("text-classification", model="exported/lora-reviews")
for text, row in zip(texts, classify(texts)):
    print(f"{row['label']}: {row['score']:.3f}  {text}")
