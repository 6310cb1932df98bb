"""The PEFT family from a script: sizes for a budget, then two methods trained at it."""

import tempfile

from peft_course.compare import Counter, compare, match_budget, size_label, table_rows
from peft_course.data import load_classification_data

data = load_classification_data("synthetic-sentiment", max_examples=60)
count = Counter("tiny-gpt2", data)  # prepares the model at a size and counts what trains
for method in ("lora", "houlsby", "prompt-tuning"):
    (budget,) = match_budget(method, [0.01], count.total, count, width=count.width)
    print(f"{method} at 1%: {size_label(method, budget.value)}, {budget.trainable:,} trainable")

with tempfile.TemporaryDirectory() as cells:  # where the finished runs are kept
    result = compare(
        data,
        methods=["bitfit", "lora"],
        shares=[0.01],
        seeds=[0],
        output=cells,
        max_epochs=2,
        rate_factors=[1.0],  # no search: each method's registry learning rate
        progress=False,
    )
for row in table_rows(result):
    print(row["method"], row["trainable params"], row["test accuracy"], row["forgetting (nats)"])
