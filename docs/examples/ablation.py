"""An ablation from a script: a two-cell rank sweep through the LM head, its table written."""

from tempfile import TemporaryDirectory

from peft_course.ablation import named_sweep, run_sweep, table_rows, write_sweep
from peft_course.configs import SweepSettings
from peft_course.data import load_classification_data

data = load_classification_data("synthetic-sentiment", max_examples=64)
# the rank table, as `peft-course ablate rank` builds it: r = 4 and 8 with alpha = 2r, no full row
sweep = named_sweep("rank", ["4", "8"], alpha_ratio=2, full=False)
settings = SweepSettings(epochs=1, batch_size=16, progress=False)

with TemporaryDirectory() as output:  # finished cells are saved under it: a rerun skips them
    result = run_sweep(sweep, data, settings, seeds=(0,), output=output)
    for row in table_rows(result):
        print(row)
    print("written:", [path.name for path in write_sweep(result, output)])
