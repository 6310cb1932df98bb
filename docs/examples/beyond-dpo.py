"""Beyond DPO from a script: SimPO through its TRL trainer, held-out reward accuracy before and
after."""

from peft_course.configs import DPORunConfig
from peft_course.dpo import film_preferences
from peft_course.preference import LossSettings, train_preference

pairs = film_preferences(n_train=32, n_test=16, prefer="negative")
config = DPORunConfig(learning_rate=2e-2, epochs=1, batch_size=8)
run = train_preference("simpo", pairs, config=config, settings=LossSettings(gamma=0.5))
print("held-out reward accuracy:", run.before["rewards/accuracies"], "->", end=" ")
print(run.after["rewards/accuracies"], f"after {run.steps} steps")
